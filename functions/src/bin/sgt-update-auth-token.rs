//! Lambda for the `sgt-update-auth-token` route; everything else comes from the route table.
maas_functions::lambda_main!();
