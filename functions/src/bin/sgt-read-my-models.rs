//! Lambda for the `sgt-read-my-models` route; everything else comes from the route table.
maas_functions::lambda_main!();
