//! Lambda for the `v1-projects-update` route; everything else comes from the route table.
maas_functions::lambda_main!();
