//! Lambda for the `sgt-list-model-type` route; everything else comes from the route table.
maas_functions::lambda_main!();
