//! Lambda for the `sgt-upload-train-data` route; everything else comes from the route table.
maas_functions::lambda_main!();
