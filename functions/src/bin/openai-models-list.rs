//! Lambda for the `openai-models-list` route; everything else comes from the route table.
maas_functions::lambda_main!();
