//! Lambda for the `v1-models-versions-complete` route; everything else comes from the route table.
maas_functions::lambda_main!();
