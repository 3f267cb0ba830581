//! The gateway as a user runs it: the `voxperfd` binary with a routes file. Start-up errors,
//! `--check-config`, and a large upload streaming through without being held in memory.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use futures_util::StreamExt as _;

fn voxperfd(routes: &std::path::Path, upstream: &str, listen: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voxperfd"));
    c.env_clear()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused")
        .env("REDIS_ENABLED", "false")
        .env("PERFORMANCE_MONITORING_ENABLED", "false")
        .env("VOXPERF_UPSTREAM", upstream)
        .env("VOXPERF_ROUTES", routes)
        .env("VOXPERF_LISTEN", listen)
        .env("RUST_LOG", "warn");
    c
}

fn routes_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique("voxperf-routes")));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_malformed_routes_file_stops_the_daemon_at_start_naming_file_line_and_field() {
    let path = routes_file("[defaults]\ntimeout = \"5s\"\n\n[[route]]\npath = \"/api/x\"\ncache = \"sometimes\"\n");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let out = voxperfd(&path, "http://127.0.0.1:9", &listen).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:6:9: route.cache: unknown strategy \"sometimes\"", path.display());
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    let check = voxperfd(&path, "http://127.0.0.1:9", &listen).arg("--check-config").output().unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains(&expected));

    std::fs::write(&path, "[[route]]\npath = \"/api/x\"\ncache = \"reports\"\n").unwrap();
    let check = voxperfd(&path, "http://127.0.0.1:9", &listen).arg("--check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout} {}", String::from_utf8_lossy(&check.stderr));
    assert!(stdout.contains("route /api/x -> default (reports 7200s)"), "{stdout}");
    let _ = std::fs::remove_file(path);
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_50_mb_upload_streams_through_without_being_held_in_memory() {
    // The upstream counts the bytes as they come.
    let app = Router::new().route(
        "/api/uploads",
        post(|body: Body| async move {
            let mut total = 0usize;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                total += chunk.unwrap().len();
            }
            total.to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.layer(axum::extract::DefaultBodyLimit::disable())).await });

    let path = routes_file("[[route]]\npath = \"/api/uploads\"\nbody_limit = \"100MiB\"\ntimeout = \"60s\"\n");
    let port = common::free_port();
    let mut daemon = voxperfd(&path, &upstream, &format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = daemon.try_wait() {
            let mut err = String::new();
            daemon.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("voxperfd exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "voxperfd did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = peak_rss_kib(daemon.id());

    const SIZE: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let chunks = futures_util::stream::iter(
        (0..SIZE / CHUNK).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; CHUNK]))),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Body>();
    let request = axum::http::Request::post(format!("http://127.0.0.1:{port}/api/uploads"))
        .body(Body::from_stream(chunks))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), SIZE.to_string(), "every byte reached the upstream");
    let grown_mib = (peak_rss_kib(daemon.id()).saturating_sub(before)) as f64 / 1024.0;
    println!("voxperfd peak RSS grew by {grown_mib:.1} MiB while streaming a 50 MiB upload");
    assert!(grown_mib < 16.0, "the upload was held in memory: peak RSS grew by {grown_mib:.1} MiB");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn sighup_reloads_the_routes_and_a_bad_file_keeps_the_old_ones() {
    let path = routes_file("[[route]]\npath = \"/api/a\"\ncache = \"shortTerm\"\n");
    let port = common::free_port();
    let mut daemon = voxperfd(&path, "http://127.0.0.1:9", &format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && daemon.try_wait().unwrap().is_none(), "voxperfd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gateway_health = || async {
        let (_, body) = common::http_get(&format!("{base}/api/performance/health")).await;
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        health["components"]["gateway"].clone()
    };
    assert_eq!(gateway_health().await["details"]["routes"], 1, "{}", gateway_health().await);

    let hup = || {
        let status = Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status().unwrap();
        assert!(status.success());
    };
    std::fs::write(&path, "[[route]]\npath = \"/api/a\"\n[[route]]\npath = \"/api/b\"\n[[route]]\npath = \"/api/c\"\n")
        .unwrap();
    hup();
    let mut reloaded = false;
    for _ in 0..100 {
        if gateway_health().await["details"]["routes"] == 3 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP reloaded the routes: {}", gateway_health().await);

    std::fs::write(&path, "[[route]]\npath = 12\n").unwrap();
    hup();
    let mut refused = false;
    for _ in 0..100 {
        let g = gateway_health().await;
        if g["details"]["last_error"].is_string() {
            assert_eq!(g["details"]["routes"], 3, "the previous routes stay in force: {g}");
            assert_eq!(g["status"], "degraded", "{g}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a bad file on reload is reported in health");
    assert!(daemon.try_wait().unwrap().is_none(), "SIGHUP does not stop the daemon");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(path);
}
