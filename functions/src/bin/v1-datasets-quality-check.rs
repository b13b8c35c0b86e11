//! Lambda for the `v1-datasets-quality-check` route; everything else comes from the route table.
maas_functions::lambda_main!();
