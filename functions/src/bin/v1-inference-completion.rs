//! Lambda for the `v1-inference-completion` route; everything else comes from the route table.
maas_functions::lambda_main!();
