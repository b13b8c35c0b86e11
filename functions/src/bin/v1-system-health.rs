//! Lambda for the `v1-system-health` route; everything else comes from the route table.
maas_functions::lambda_main!();
