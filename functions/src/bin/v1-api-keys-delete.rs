//! Lambda for the `v1-api-keys-delete` route; everything else comes from the route table.
maas_functions::lambda_main!();
