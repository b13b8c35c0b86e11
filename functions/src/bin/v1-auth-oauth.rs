//! Lambda for the `v1-auth-oauth` route; everything else comes from the route table.
maas_functions::lambda_main!();
