//! Lambda for the `openai-models-get` route; everything else comes from the route table.
maas_functions::lambda_main!();
