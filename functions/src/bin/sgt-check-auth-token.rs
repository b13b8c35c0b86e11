//! Lambda for the `sgt-check-auth-token` route; everything else comes from the route table.
maas_functions::lambda_main!();
