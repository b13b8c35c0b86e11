//! Lambda for the `v1-datasets-versions-get` route; everything else comes from the route table.
maas_functions::lambda_main!();
