//! Lambda for the `v1-datasets-versions-create` route; everything else comes from the route table.
maas_functions::lambda_main!();
