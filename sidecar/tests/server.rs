//! The sidecar over real HTTP and as an in-process call (how `maas` reaches it): its
//! shared-secret check, its bounded queue, and a run, with the same answers either way.

use maas_sidecar::{Sidecar, SidecarConfig};
use maas_sidecar_client::{ModelRef, SidecarClient, SidecarError};
use maas_store::{StoreConfig, Stores};

async fn start(queue: usize) -> (Sidecar, tempfile::TempDir) {
    let (sidecar, _, dir) = start_with_stores(queue).await;
    (sidecar, dir)
}

async fn start_with_stores(queue: usize) -> (Sidecar, Stores, tempfile::TempDir) {
    let mut cfg = SidecarConfig::new("right-secret");
    cfg.queue = queue;
    start_configured(cfg).await
}

async fn start_configured(cfg: SidecarConfig) -> (Sidecar, Stores, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&StoreConfig::Embedded {
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (Sidecar::start(&stores, Some(listener), cfg).await.unwrap(), stores, dir)
}

/// The same sidecar over HTTP and in process.
fn clients(sidecar: &Sidecar) -> [SidecarClient; 2] {
    [
        SidecarClient::new(&format!("http://{}", sidecar.addr.unwrap()), "right-secret"),
        SidecarClient::in_process(sidecar.compute.clone()),
    ]
}

fn model(in_size: u32, out_size: u32) -> ModelRef {
    ModelRef {
        model_id: "m".into(),
        model_type: "std".into(),
        in_size,
        out_size,
        seed: 3,
        checkpoint: None,
    }
}

#[tokio::test]
async fn a_client_that_stalls_in_a_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = SidecarConfig::new("right-secret");
    cfg.head_timeout = std::time::Duration::from_secs(1);
    let (sidecar, _stores, _dir) = start_configured(cfg).await;
    let mut stream = tokio::net::TcpStream::connect(sidecar.addr.unwrap()).await.unwrap();
    stream
        .write_all(b"POST /v1/sgt/run HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "the connection is still open");
    sidecar.stop();
}

#[tokio::test]
async fn runs_answer_one_output_row_per_input_row() {
    let (sidecar, _dir) = start(8).await;
    for client in clients(&sidecar) {
        client.health().await.unwrap();
        let out = client
            .run(&model(3, 2), &[0.1, 0.2, 0.3, -1.0, 0.0, 1.0])
            .await
            .unwrap();
        assert_eq!(out.len(), 4);
        assert!(client.run(&model(3, 2), &[]).await.unwrap().is_empty());
        let unknown = ModelRef {
            model_type: "nope".into(),
            ..model(3, 2)
        };
        assert!(matches!(
            client.run(&unknown, &[0.0; 3]).await,
            Err(SidecarError::Rejected(_))
        ));
        assert!(matches!(
            client.run(&model(3, 2), &[0.0; 4]).await,
            Err(SidecarError::Rejected(_))
        ));
    }
    let [http, local] = clients(&sidecar);
    let rows = [0.5, -0.25, 0.125];
    assert_eq!(
        http.run(&model(3, 2), &rows).await.unwrap(),
        local.run(&model(3, 2), &rows).await.unwrap()
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_but_health_needs_none() {
    let (sidecar, _dir) = start(8).await;
    let client = SidecarClient::new(&format!("http://{}", sidecar.addr.unwrap()), "wrong-secret");
    client.health().await.unwrap();
    assert!(
        matches!(client.run(&model(2, 1), &[0.0, 0.0]).await, Err(SidecarError::Rejected(m)) if m.contains("secret"))
    );
}

#[tokio::test]
async fn a_full_queue_answers_busy_instead_of_piling_up_work() {
    let (sidecar, _dir) = start(0).await;
    for client in clients(&sidecar) {
        assert!(matches!(
            client.run(&model(2, 1), &[0.0, 0.0]).await,
            Err(SidecarError::Busy)
        ));
    }
}

#[tokio::test]
async fn a_superseded_checkpoint_is_reported_as_stale_not_as_a_failure() {
    let (sidecar, _dir) = start(8).await;
    let gone = maas_sidecar_client::CheckpointRef {
        blob: "sgt/m/ckpt/removed.safetensors".into(),
        version: 7,
    };
    let stale = ModelRef {
        checkpoint: Some(gone),
        ..model(2, 1)
    };
    for client in clients(&sidecar) {
        assert!(matches!(
            client.run(&stale, &[0.0, 0.0]).await,
            Err(SidecarError::Stale)
        ));
    }
}

#[tokio::test]
async fn a_corrupt_checkpoint_is_reported_unavailable_without_its_details() {
    let (sidecar, stores, _dir) = start_with_stores(8).await;
    let blob = "sgt/m/ckpt/corrupt.safetensors";
    stores.blobs.put(blob, "not a safetensors file".into()).await.unwrap();
    let corrupt = ModelRef {
        checkpoint: Some(maas_sidecar_client::CheckpointRef {
            blob: blob.into(),
            version: 1,
        }),
        ..model(2, 1)
    };
    for client in clients(&sidecar) {
        match client.run(&corrupt, &[0.0, 0.0]).await {
            // In process the fixed message; over HTTP a 500 whose body the client drops.
            Err(SidecarError::Unavailable(m)) => {
                assert!(
                    m == "cannot load model" || m.starts_with("status 500"),
                    "details leaked: {m}"
                )
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stopped_sidecar_answers_busy_on_open_connections_and_in_process() {
    let (sidecar, _dir) = start(8).await;
    let clients = clients(&sidecar);
    for client in &clients {
        // Opens the HTTP client's keep-alive connection, which outlives the listener.
        client.run(&model(2, 1), &[0.0, 0.0]).await.unwrap();
    }
    sidecar.stop();
    for client in &clients {
        assert!(matches!(
            client.run(&model(2, 1), &[0.0, 0.0]).await,
            Err(SidecarError::Busy)
        ));
    }
}
