//! Lambda for the `v1-roles-create` route; everything else comes from the route table.
maas_functions::lambda_main!();
