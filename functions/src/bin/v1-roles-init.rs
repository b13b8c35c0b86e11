//! Lambda for the `v1-roles-init` route; everything else comes from the route table.
maas_functions::lambda_main!();
