"""storage/s3.py without a server: the one validated way to set the endpoint, and S3 error responses
rewritten into errors a user can act on (the real server is in test_s3.py / test_s3_faults.py)."""
import pytest

from fmashard.errors import AuthError, NotFoundError, StorageError, UserError
from fmashard.storage import s3
from fmashard.storage.base import RangeNotSatisfiable
from fmashard.storage.retry import TransientError

URL = "s3://bucket/training/training-000000.tar"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8333", "https://s3.example.org", "http://minio:9000/"])
def test_a_valid_endpoint_is_set_for_this_process_and_its_workers(monkeypatch, url):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3.set_endpoint_url(url)
    assert s3.os.environ["AWS_ENDPOINT_URL"] == url


@pytest.mark.parametrize("url", ["ftp://host:21", "localhost:9000", "http://", "http://host:port", "s3://b"])
def test_a_bad_endpoint_is_one_line_and_changes_nothing(monkeypatch, url):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://before:1")
    with pytest.raises(UserError) as info:
        s3.set_endpoint_url(url)
    assert str(info.value) == f"--endpoint-url {url!r}: expected http://host:port or https://host:port"
    assert s3.os.environ["AWS_ENDPOINT_URL"] == "http://before:1"


def test_no_endpoint_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://before:1")
    s3.set_endpoint_url(None)
    s3.set_endpoint_url("")
    assert s3.os.environ["AWS_ENDPOINT_URL"] == "http://before:1"


def response(code="", status=0, content_range=None):
    headers = {"content-range": content_range} if content_range else {}
    return {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}


@pytest.mark.parametrize("resp, kind, text", [
    (response("NoSuchKey", 404), NotFoundError, f"{URL}: not found"),
    (response("NoSuchBucket", 404), NotFoundError, f"{URL}: bucket 'bucket' does not exist"),
    (response("AccessDenied", 403), AuthError, f"{URL}: access denied (AccessDenied): check the AWS credentials"),
    (response("PreconditionFailed", 412), StorageError, f"{URL}: the object was replaced while it was being read"),
    (response("InvalidRange", 416, "bytes */5000"), RangeNotSatisfiable, f"{URL}: range starts past the end"),
    (response("Weird", 400), StorageError, f"{URL}: S3 error Weird"),
])
def test_s3_error_responses_become_errors_naming_the_url(resp, kind, text):
    error = s3._client_error(URL, resp)
    assert type(error) is kind and str(error).startswith(text)


@pytest.mark.parametrize("resp", [response("SlowDown", 503), response("InternalError", 500), response("", 502)])
def test_server_side_failures_are_transient(resp):
    assert isinstance(s3._client_error(URL, resp), TransientError)


def test_a_range_past_the_end_reports_the_object_size():
    assert s3._client_error(URL, response("InvalidRange", 416, "bytes */5000")).size == 5000
    assert s3.split_s3(URL) == ("bucket", "training/training-000000.tar")


@pytest.mark.parametrize("command", [["train", "--shards", "x", "--out", "y"], ["bench", "--shards", "x"],
                                     ["evaluate", "--checkpoint", "c.pt", "--shards", "x"]])
def test_every_command_with_endpoint_url_refuses_a_bad_one_in_one_line(cli_error, command):
    line = cli_error(*command, "--endpoint-url", "localhost:9000")
    assert line == "error: --endpoint-url 'localhost:9000': expected http://host:port or https://host:port"
