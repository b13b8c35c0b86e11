//! Lambda for the `v1-auth-me` route; everything else comes from the route table.
maas_functions::lambda_main!();
