//! Lambda for the `openai-embeddings` route; everything else comes from the route table.
maas_functions::lambda_main!();
