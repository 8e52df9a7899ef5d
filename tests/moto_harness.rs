//! The moto harness (`tests/moto_support`) works: a server starts on loopback, boto3
//! snippets reach it, it honours the S3 conditional writes the S3 state backend relies on
//! (`If-None-Match: *`, `If-Match` on PutObject and DeleteObject), reset forgets
//! everything, the request log sees AWS calls, and nothing is left running after drop.

mod moto_support;
use moto_support::{venv_bin, Moto};

#[test]
fn server_starts_answers_boto3_and_is_gone_after_drop() {
    let moto = Moto::start();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let env = moto.env();
    assert!(env.contains(&("AWS_ENDPOINT_URL", moto.endpoint())));
    assert!(env.contains(&("AWS_REGION", "us-east-1".to_string())));

    assert!(moto.requests().is_empty(), "{:?}", moto.requests());
    moto.create_bucket("harness-bucket");
    let listed = moto.python(
        "s3 = client('s3')\n\
         s3.put_object(Bucket='harness-bucket', Key='a/b.json', Body=b'{}')\n\
         result = [o['Key'] for o in s3.list_objects_v2(Bucket='harness-bucket')['Contents']]",
    );
    assert_eq!(listed, serde_json::json!(["a/b.json"]));
    let reqs = moto.requests();
    assert!(
        reqs.iter()
            .any(|l| l.contains("\"PUT /harness-bucket/a/b.json")),
        "{reqs:?}"
    );

    moto.reset();
    let buckets = moto.python("result = client('s3').list_buckets()['Buckets']");
    assert_eq!(buckets, serde_json::json!([]));

    let pid = moto.pid().expect("running");
    let port = moto.port;
    drop(moto);
    // SAFETY: kill(pid, 0) only probes for existence.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "moto_server {pid} still running after drop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections"
    );
}

#[test]
fn s3_conditional_writes_are_enforced() {
    let moto = Moto::shared();
    moto.create_bucket("harness-conditional");
    let r = moto.python(
        "s3 = client('s3')\n\
         B = 'harness-conditional'\n\
         def code(f):\n    \
             try:\n        f()\n        return 'ok'\n    \
             except botocore.exceptions.ClientError as e:\n        \
                 return e.response['Error']['Code']\n\
         e1 = s3.put_object(Bucket=B, Key='k', Body=b'1', IfNoneMatch='*')['ETag']\n\
         result = {\n  \
           'second_create': code(lambda: s3.put_object(Bucket=B, Key='k', Body=b'2', IfNoneMatch='*')),\n  \
           'matching_write': code(lambda: s3.put_object(Bucket=B, Key='k', Body=b'3', IfMatch=e1)),\n  \
           'stale_write': code(lambda: s3.put_object(Bucket=B, Key='k', Body=b'4', IfMatch=e1)),\n  \
           'stale_delete': code(lambda: s3.delete_object(Bucket=B, Key='k', IfMatch=e1)),\n  \
           'body': s3.get_object(Bucket=B, Key='k')['Body'].read().decode(),\n\
         }",
    );
    assert_eq!(
        r,
        serde_json::json!({
            "second_create": "PreconditionFailed",
            "matching_write": "ok",
            "stale_write": "PreconditionFailed",
            "stale_delete": "PreconditionFailed",
            "body": "3",
        })
    );
}

#[test]
#[should_panic(expected = "run `bash .ci/setup-python`")]
fn a_missing_venv_tool_fails_saying_what_to_run() {
    venv_bin("no-such-moto-tool");
}
