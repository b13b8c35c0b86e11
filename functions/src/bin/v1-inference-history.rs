//! Lambda for the `v1-inference-history` route; everything else comes from the route table.
maas_functions::lambda_main!();
