//! Lambda for the `sgt-run-model` route; everything else comes from the route table.
maas_functions::lambda_main!();
