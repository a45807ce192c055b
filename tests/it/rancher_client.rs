//! The Rancher client against the fake Rancher: pagination, filters, retries, errors,
//! deadlines, rate limit, actions.

use std::time::{Duration, Instant};

use corral::rancher::model::{Project, Stack};
use corral::rancher::{Client, ClientOptions, Filter, RancherError};
use corral::secret::Secret;
use serde_json::json;

use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, Fault, SECRET_KEY};

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        rate_limit: 1000,
        retries: 2,
        backoff: Duration::from_millis(5),
        page_size: None,
    }
}

fn client(fake: &FakeRancher, base_suffix: &str, o: ClientOptions) -> Client {
    let url = url::Url::parse(&format!("{}{base_suffix}", fake.url)).unwrap();
    Client::new(&url, Secret::new(ACCESS_KEY), Secret::new(SECRET_KEY), o).unwrap()
}

#[tokio::test]
async fn lists_every_page_and_rechecks_filters() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    for i in 0..250 {
        fake.add_stack(
            &pid,
            &format!("web{i}"),
            &format!("catalog://library:my_app:{}", i % 3),
        );
    }
    // `_` is a LIKE wildcard on the server: this one comes back from the server too.
    fake.add_stack(&pid, "imposter", "catalog://library:myXapp:1");
    fake.add_stack(&pid, "handmade", "");
    let c = client(&fake, "/v1", opts());
    let projects = c.projects().await.unwrap();
    assert_eq!(projects.len(), 1);
    let stacks = c
        .stacks(
            &projects[0],
            &[Filter::prefix("externalId", "catalog://library:my_app:")],
        )
        .await
        .unwrap();
    assert_eq!(stacks.len(), 250, "all pages, imposter removed client-side");
    assert!(stacks.iter().all(|s| s.name.starts_with("web")));
    // 251 server matches at 100 per page: 3 pages.
    assert_eq!(fake.count("GET", "/stacks"), 3);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.uri.contains("marker=m200"))
    );

    // A server that ignores filters (unknown field) is caught by the re-check as well.
    fake.set_ignore_filters(true);
    let stacks: Vec<Stack> = c
        .stacks(&projects[0], &[Filter::eq("name", "handmade")])
        .await
        .unwrap();
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].external_id, "");
}

#[tokio::test]
async fn configurable_page_size_and_limit() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    for i in 0..7 {
        fake.add_stack(&pid, &format!("s{i}"), "");
    }
    fake.set_page_size(2);
    let c = client(&fake, "", opts());
    let p = c.project(&pid).await.unwrap();
    assert_eq!(c.stacks(&p, &[]).await.unwrap().len(), 7);
    assert_eq!(fake.count("GET", "/stacks"), 4);
    fake.clear_log();
    let c = client(
        &fake,
        "",
        ClientOptions {
            page_size: Some(1000),
            ..opts()
        },
    );
    assert_eq!(c.stacks(&p, &[]).await.unwrap().len(), 7);
    assert_eq!(fake.count("GET", "/stacks"), 1);
}

#[tokio::test]
async fn errors_keep_rancher_code_and_message() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    let c = client(&fake, "/v2-beta", opts());
    let e = c.stack(&pid, "1st999").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.code(), Some("Not Found"));
    assert_eq!(e.message(), "Not Found");
    // Catalog service: string status, no code.
    let e = c.template("library", "nope", None).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.code(), Some("Not Found"));
    assert_eq!(e.message(), "Template not found");
    // Bad credentials.
    let bad = Client::new(
        &url::Url::parse(&fake.url).unwrap(),
        Secret::new("x"),
        Secret::new("y"),
        opts(),
    )
    .unwrap();
    let e = bad.projects().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("Unauthorized")));
    // 422 with the text in fieldName.
    let sid = fake.add_stack(&pid, "web", "catalog://library:web:1");
    fake.patch(&sid, json!({"state": "upgrading"}));
    let stack = c.stack(&pid, &sid).await.unwrap();
    assert!(
        stack.action("upgrade").is_none(),
        "upgrade is not offered while upgrading"
    );
    let link = format!(
        "{}/v2-beta/projects/{pid}/stacks/{sid}/?action=upgrade",
        fake.url
    );
    let e = c
        .post::<serde_json::Value>(&link, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert_eq!(e.code(), Some("ActionNotAvailable"));
    assert_eq!(e.message(), "action");
    // The local check refuses without a request.
    let before = fake.requests().len();
    let e = c
        .action::<_, serde_json::Value>(&stack, "stack web", &stack.state, "upgrade", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, RancherError::ActionNotOffered { .. }), "{e}");
    assert_eq!(fake.requests().len(), before);
}

use corral::rancher::model::Resource;

#[tokio::test]
async fn gets_are_retried_posts_are_not() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    let sid = fake.add_stack(&pid, "web", "catalog://library:web:1");
    let c = client(&fake, "", opts());
    fake.fail_requests(Some("GET"), "/projects", 503, 2);
    assert_eq!(c.projects().await.unwrap().len(), 1);
    assert_eq!(fake.count("GET", "/v2-beta/projects"), 3);
    // Retries are bounded.
    fake.fail_requests(Some("GET"), "/projects", 500, 3);
    let e = c.projects().await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    // 4xx is not retried.
    fake.clear_log();
    let _ = c.stack(&pid, "1st404").await.unwrap_err();
    assert_eq!(fake.requests().len(), 1);
    // A POST that fails is sent once.
    fake.clear_log();
    fake.fail(&sid, "upgrade", Fault::server_error());
    let stack = c.stack(&pid, &sid).await.unwrap();
    let e = c
        .action::<_, Stack>(&stack, "web", "active", "upgrade", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(fake.posts().len(), 1);
}

#[tokio::test]
async fn every_call_has_a_deadline() {
    let fake = FakeRancher::start().await;
    fake.add_project("Default");
    fake.set_latency(Duration::from_millis(300));
    let c = client(
        &fake,
        "",
        ClientOptions {
            request_timeout: Duration::from_millis(50),
            retries: 1,
            ..opts()
        },
    );
    let t = Instant::now();
    let e = c.projects().await.unwrap_err();
    assert!(matches!(e, RancherError::Timeout { .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn rate_limit_paces_requests() {
    let fake = FakeRancher::start().await;
    fake.add_project("Default");
    let c = client(
        &fake,
        "",
        ClientOptions {
            rate_limit: 20,
            ..opts()
        },
    );
    let t = Instant::now();
    // A burst of 20 passes at once; the next 10 need about half a second.
    let calls = (0..30).map(|_| c.projects());
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(c.requests_sent(), 30);
}

#[tokio::test]
async fn actions_follow_links_and_states_move_over_time() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    let sid = fake.add_stack(&pid, "web", "catalog://library:web:1");
    fake.set_action_time("upgrade", Duration::from_millis(40));
    let c = client(&fake, "", opts());
    let p: Project = c.project(&pid).await.unwrap();
    let stack = c.stacks(&p, &[]).await.unwrap().remove(0);
    let after: Stack = c
        .action(
            &stack,
            "web",
            &stack.state,
            "upgrade",
            &json!({"externalId": "catalog://library:web:2", "environment": {"A": "b"}}),
        )
        .await
        .unwrap();
    assert_eq!(after.state, "upgrading");
    assert!(after.action("finishupgrade").is_none());
    assert!(after.action("cancelupgrade").is_some());
    tokio::time::sleep(Duration::from_millis(60)).await;
    let now: Stack = c.get(after.link("self").unwrap()).await.unwrap();
    assert_eq!(now.state, "upgraded");
    assert_eq!(now.external_id, "catalog://library:web:2");
    assert_eq!(now.previous_external_id, "catalog://library:web:1");
    assert_eq!(now.environment, Some(json!({"PORT": "80", "A": "b"})));
    let _: Stack = c
        .action(&now, "web", &now.state, "finishupgrade", &json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.state_of(&sid), "active");
    let logged = fake.posts();
    assert_eq!(logged[0].action().as_deref(), Some("upgrade"));
    assert_eq!(logged[0].json()["externalId"], "catalog://library:web:2");
    // The template and its version through versionLinks.
    fake.add_template(
        "library",
        "web",
        &[
            ("1", "1.0.0", &[("docker-compose.yml", "a")]),
            ("2", "2.0.0", &[("docker-compose.yml", "b")]),
        ],
    );
    let t = c.template("library", "web", None).await.unwrap();
    let v = c
        .template_version(&t.version_links["2.0.0"], None)
        .await
        .unwrap();
    assert_eq!(
        (v.id.as_str(), v.version.as_str()),
        ("library:web:2", "2.0.0")
    );
    assert_eq!(v.file("docker-compose.yml"), Some("b"));
    // A catalog added to one environment: seen with that environment's header only.
    let other = fake.add_project("Other");
    fake.add_template_in(
        &pid,
        "team",
        "api",
        &[("1", "1.0.0", &[("docker-compose.yml", "c")])],
    );
    let e = c.template("team", "api", None).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = c.template("team", "api", Some(&other)).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let t = c.template("team", "api", Some(&pid)).await.unwrap();
    let v = c
        .template_version(&t.version_links["1.0.0"], Some(&pid))
        .await
        .unwrap();
    assert_eq!(v.id, "team:api:1");
    // The global catalogs are seen from every environment.
    assert!(c.template("library", "web", Some(&other)).await.is_ok());
    // An environment the key cannot reach: 403, as Cattle answers.
    let e = c
        .template("library", "web", Some("1a999"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let scoped = fake
        .requests()
        .iter()
        .filter(|r| r.uri.contains("team:api"))
        .map(|r| r.project_header.clone())
        .collect::<Vec<_>>();
    assert_eq!(scoped[0], None);
    assert_eq!(scoped[2].as_deref(), Some(pid.as_str()));
}

#[tokio::test]
async fn a_stacks_services_through_its_link() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    let sid = fake.add_stack(&pid, "web", "");
    let other = fake.add_stack(&pid, "db", "");
    for (name, stack) in [("api", &sid), ("worker", &sid), ("postgres", &other)] {
        fake.add_resource(
            &pid,
            "services",
            json!({"name": name, "stackId": stack, "launchConfig": {"imageUuid": "docker:nginx:1"}}),
        );
    }
    let c = client(&fake, "", opts());
    let stack = c.stack(&pid, &sid).await.unwrap();
    let services: Vec<serde_json::Value> =
        c.list(stack.link("services").unwrap(), &[]).await.unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["api", "worker"]);
    assert!(
        services[0]["actions"]["upgrade"].is_string(),
        "an active service offers upgrade"
    );
    assert_eq!(services[0]["type"], "service");
}

#[tokio::test]
async fn hostile_answers_are_errors_not_panics() {
    let fake = FakeRancher::start().await;
    let pid = fake.add_project("Default");
    fake.add_stack(&pid, "web", "catalog://library:web:1");
    let c = client(&fake, "", opts());
    let p = c.project(&pid).await.unwrap();
    // Not JSON with a 200.
    fake.answer_requests(Some("GET"), "/stacks", 200, "<html>proxy login</html>", 1);
    let e = c.stacks(&p, &[]).await.unwrap_err();
    assert!(matches!(e, RancherError::Decode { .. }), "{e}");
    // A `next` that points back to the page just read.
    let self_url = format!("{}/v2-beta/projects/{pid}/stacks", fake.url);
    let looping = json!({"type": "collection", "data": [], "pagination": {"next": self_url, "partial": true}});
    fake.answer_requests(Some("GET"), "/stacks", 200, &looping.to_string(), 1);
    let e = c.stacks(&p, &[]).await.unwrap_err();
    assert!(e.to_string().contains("already read"), "{e}");
    // Wrong types and nulls everywhere decode leniently.
    let odd = json!({"data": [{"id": "1st1", "name": null, "externalId": 7, "actions": {"upgrade": 1}, "links": null}], "pagination": null});
    fake.answer_requests(Some("GET"), "/stacks", 200, &odd.to_string(), 1);
    let e = c.stacks(&p, &[]).await;
    // `externalId: 7` is not a string: refused with a clear error rather than guessed.
    assert!(matches!(e, Err(RancherError::Decode { .. })), "{e:?}");
    // A non-JSON error body keeps the HTTP status.
    fake.answer_requests(Some("GET"), "/projects", 502, "Bad Gateway", 3);
    let e = c.projects().await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(502), Some("Bad Gateway")));
    // `data: null` is an empty page.
    fake.answer_requests(
        Some("GET"),
        "/stacks",
        200,
        r#"{"data": null, "pagination": null}"#,
        1,
    );
    assert!(c.stacks(&p, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_rancher_one_budget_and_no_process_wide_limit() {
    use corral::config::{Config, Env};
    use corral::rancher::Rancher;
    let fake = FakeRancher::start().await;
    fake.add_project("Default");
    let config = Config::from_env(&Env::from_pairs([
        ("RANCHER_URL", fake.url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_RATE", "10"),
    ]))
    .unwrap();
    let burst = |clients: Vec<Client>| async move {
        let t = Instant::now();
        let calls = clients
            .iter()
            .flat_map(|c| (0..10).map(move |_| c.projects()));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        t.elapsed()
    };
    // Two clients of one Rancher share its 10/s: 20 requests need about a second.
    let rancher = Rancher::new(&config.rancher);
    let shared = burst(vec![
        rancher.client().unwrap(),
        rancher.clone().client().unwrap(),
    ])
    .await;
    assert!(shared >= Duration::from_millis(800), "{shared:?}");
    // Two Ranchers (two apps in one process) do not: each has its own burst of 10.
    let (a, b) = (Rancher::new(&config.rancher), Rancher::new(&config.rancher));
    let apart = burst(vec![a.client().unwrap(), b.client().unwrap()]).await;
    assert!(apart < Duration::from_millis(500), "{apart:?}");
    // Not configured: a clear error, no client.
    let bare = Config::from_env(&Env::from_pairs([("CORRAL_CHANNEL", "C")])).unwrap();
    let e = Rancher::new(&bare.rancher).client().unwrap_err();
    assert!(e.to_string().contains("RANCHER_URL"), "{e}");
}
