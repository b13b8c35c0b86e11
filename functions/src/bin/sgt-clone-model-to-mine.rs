//! Lambda for the `sgt-clone-model-to-mine` route; everything else comes from the route table.
maas_functions::lambda_main!();
