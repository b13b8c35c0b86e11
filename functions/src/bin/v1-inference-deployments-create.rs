//! Lambda for the `v1-inference-deployments-create` route; everything else comes from the route table.
maas_functions::lambda_main!();
