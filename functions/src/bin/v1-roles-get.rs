//! Lambda for the `v1-roles-get` route; everything else comes from the route table.
maas_functions::lambda_main!();
