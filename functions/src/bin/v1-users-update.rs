//! Lambda for the `v1-users-update` route; everything else comes from the route table.
maas_functions::lambda_main!();
