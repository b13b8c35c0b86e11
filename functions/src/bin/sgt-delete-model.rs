//! Lambda for the `sgt-delete-model` route; everything else comes from the route table.
maas_functions::lambda_main!();
