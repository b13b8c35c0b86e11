//! Lambda for the `sgt-update-model-client-data` route; everything else comes from the route table.
maas_functions::lambda_main!();
