//! Lambda for the `v1-users-me-stats` route; everything else comes from the route table.
maas_functions::lambda_main!();
