use std::path::PathBuf;
use std::sync::Arc;

use crate::blobs::Blobs;
use crate::table::Table;

/// Where state lives.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// redb + files under one directory; no services needed.
    Embedded { dir: PathBuf },
    /// DynamoDB + S3 through the standard AWS environment.
    Aws { table: String, bucket: String },
}

/// The two handles every component gets, built once at start-up.
#[derive(Clone)]
pub struct Stores {
    pub table: Arc<dyn Table>,
    pub blobs: Arc<dyn Blobs>,
}

impl Stores {
    pub async fn open(config: &StoreConfig) -> anyhow::Result<Stores> {
        match config {
            StoreConfig::Embedded { dir } => Ok(Stores {
                table: Arc::new(crate::embedded::EmbeddedTable::open(&dir.join("table.redb"))?),
                blobs: Arc::new(crate::embedded::FileBlobs::open(&dir.join("blobs"))?),
            }),
            StoreConfig::Aws { table, bucket } => {
                let conf = crate::aws::sdk_config().await;
                Ok(Stores {
                    table: Arc::new(crate::aws::DynamoTable::new(
                        aws_sdk_dynamodb::Client::new(&conf),
                        table,
                    )),
                    blobs: Arc::new(crate::aws::S3Blobs::new(crate::aws::s3_client(&conf), bucket)),
                })
            }
        }
    }
}
