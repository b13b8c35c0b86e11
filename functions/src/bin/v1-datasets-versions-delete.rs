//! Lambda for the `v1-datasets-versions-delete` route; everything else comes from the route table.
maas_functions::lambda_main!();
