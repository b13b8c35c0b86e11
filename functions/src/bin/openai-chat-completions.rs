//! Lambda for the `openai-chat-completions` route; everything else comes from the route table.
maas_functions::lambda_main!();
