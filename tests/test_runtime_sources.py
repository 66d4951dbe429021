"""Runtime sources against real servers on loopback: files and folders, HTTP(S) files and
indexes, a GitHub-API-shaped server, TLS, the cache with its TTL, fallbacks and priority."""

from __future__ import annotations

import traceback
import warnings

import pytest
import yaml
from runtime_servers import (
    KUSTOMIZATION,
    Clock,
    file_server,
    github_server,
    runtime_yaml,
    self_signed_tls,
)

from prefect_kubeflow.errors import (
    InvalidRuntimeSourceError,
    RuntimeFetchError,
    RuntimeNotFoundError,
    RuntimeParseError,
    RuntimeSourceError,
    RuntimeSourceWarning,
)
from prefect_kubeflow.runtimes import HttpSettings, RuntimeCatalog

DAY = 24 * 3600


@pytest.fixture
def clock() -> Clock:
    return Clock()


def catalog(sources, tmp_path, clock, pin_images=True, **http) -> RuntimeCatalog:
    settings = {"allow_http": True, "timeout_seconds": 5.0, **http}
    return RuntimeCatalog(
        sources,
        cache_dir=tmp_path / "cache",
        http=HttpSettings(**settings),
        clock=clock,
        pin_images=pin_images,
    )


def names(listing) -> list[str]:
    return list(listing.specs)


# -- files and folders --------------------------------------------------------------------------


def test_a_folder_is_read_recursively_and_other_kinds_are_skipped(tmp_path, clock):
    folder = tmp_path / "runtimes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.yaml").write_text(runtime_yaml("alpha", num_nodes=3, nproc=4))
    (folder / "sub" / "b.yml").write_text(runtime_yaml("beta") + "---\n" + runtime_yaml("gamma"))
    (folder / "kustomization.yaml").write_text(KUSTOMIZATION)
    (folder / "notes.txt").write_text("not yaml: [")
    listing = catalog([str(folder) + "/"], tmp_path, clock).load()
    assert listing.errors == []
    assert names(listing) == ["alpha", "beta", "gamma", "torch-distributed"]
    alpha = listing.specs["alpha"]
    assert (alpha.runtime.trainer.num_nodes, alpha.num_proc_per_node) == (3, 4)
    assert alpha.runtime.origin == str(folder / "a.yaml")
    assert listing.specs["gamma"].runtime.origin == str(folder / "sub" / "b.yml")
    assert listing.specs["torch-distributed"].runtime.origin == "builtin:torch-distributed.yaml"


def test_a_file_url_and_a_plain_path_name_the_same_file(tmp_path, clock):
    path = tmp_path / "one.yaml"
    path.write_text(runtime_yaml("one"))
    for source in (f"file://{path}", str(path)):
        listing = catalog([source], tmp_path, clock).load()
        assert listing.errors == [] and "one" in listing.specs


def test_a_changed_file_is_read_again(tmp_path, clock):
    path = tmp_path / "one.yaml"
    path.write_text(runtime_yaml("one", image="img:1"))
    runtimes = catalog([str(path)], tmp_path, clock)
    assert runtimes.get("one").runtime.trainer.image == "img:1"
    path.write_text(runtime_yaml("one", image="img:22"))
    assert runtimes.get("one").runtime.trainer.image == "img:22"


# -- priority, defaults, built-ins --------------------------------------------------------------


def test_earlier_sources_win_and_builtins_come_last(tmp_path, clock):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(runtime_yaml("shared", image="first:1"))
    second.write_text(
        runtime_yaml("shared", image="second:1")
        + "---\n"
        + runtime_yaml("torch-distributed", image="team/torch:2")
    )
    listing = catalog([str(first), str(second)], tmp_path, clock).load()
    assert names(listing) == ["shared", "torch-distributed"]
    assert listing.specs["shared"].runtime.trainer.image == "first:1"
    assert listing.specs["shared"].runtime.origin == str(first)
    # A source may redefine a built-in runtime: the team's image wins.
    assert listing.specs["torch-distributed"].runtime.trainer.image == "team/torch:2"


def test_a_runtime_without_an_image_gets_its_frameworks_default(tmp_path, clock):
    path = tmp_path / "r.yaml"
    path.write_text(
        runtime_yaml("bare-torch", image=None)
        + "---\n"
        + runtime_yaml("bare-jax", image=None, framework="jax")
    )
    listing = catalog([str(path)], tmp_path, clock).load()
    assert listing.specs["bare-torch"].runtime.trainer.image.startswith("pytorch/pytorch:")
    assert listing.specs["bare-jax"].runtime.trainer.image == ""  # no default for jax
    overridden = RuntimeCatalog(
        [str(path)], cache_dir=tmp_path / "c2", default_images={"jax": "team/jax:1"}
    ).load()
    assert overridden.specs["bare-jax"].runtime.trainer.image == "team/jax:1"


def test_builtins_can_be_left_out(tmp_path, clock):
    runtimes = RuntimeCatalog([], cache_dir=tmp_path, include_builtin=False)
    assert runtimes.load().specs == {}
    with pytest.raises(RuntimeNotFoundError, match="'torch-distributed' not found"):
        runtimes.get("torch-distributed")


# -- HTTP(S) --------------------------------------------------------------------------------------


def test_an_https_file_and_an_index_of_files(tmp_path, clock):
    with file_server() as server:
        server.files["/one.yaml"] = runtime_yaml("web-one").encode()
        server.files["/team/two.yaml"] = runtime_yaml("web-two").encode()
        server.files["/team/index.yaml"] = b"- two.yaml\n- /one.yaml\n"
        listing = catalog(
            [f"{server.url}/team/index.yaml", f"{server.url}/one.yaml"], tmp_path, clock
        ).load()
    assert listing.errors == []
    assert names(listing) == ["web-two", "web-one", "torch-distributed"]
    assert listing.specs["web-two"].runtime.origin == f"{server.url}/team/two.yaml"


def test_tls_with_a_self_signed_certificate_needs_its_ca(tmp_path, clock):
    context, ca_file = self_signed_tls(tmp_path)
    with file_server(tls=context) as server:
        server.files["/r.yaml"] = runtime_yaml("secure").encode()
        source = f"{server.url}/r.yaml"
        refused = catalog([source], tmp_path, clock, allow_http=False).load()
        trusted = catalog([source], tmp_path / "t", clock, allow_http=False, ca_bundle=str(ca_file))
        accepted = trusted.load()
    [error] = refused.errors
    assert isinstance(error, RuntimeFetchError) and error.source == source
    assert "not trusted" in error.reason and "ca_bundle" in error.reason
    assert "secure" not in refused.specs
    assert accepted.errors == [] and "secure" in accepted.specs


def test_http_is_refused_unless_allowed(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("plain").encode()
        listing = catalog([f"{server.url}/r.yaml"], tmp_path, clock, allow_http=False).load()
    [error] = listing.errors
    assert isinstance(error, InvalidRuntimeSourceError) and "http:// is refused" in str(error)
    assert server.requests == []  # refused before connecting


def test_a_redirect_off_https_is_refused(tmp_path, clock):
    context, ca_file = self_signed_tls(tmp_path)
    with file_server() as plain, file_server(tls=context) as secure:
        plain.files["/r.yaml"] = runtime_yaml("downgraded").encode()
        secure.files["/r.yaml"] = (302, f"{plain.url}/r.yaml".encode())
        source = f"{secure.url}/r.yaml"
        listing = catalog(
            [source], tmp_path, clock, allow_http=False, ca_bundle=str(ca_file)
        ).load()
    [error] = listing.errors
    assert isinstance(error, RuntimeFetchError) and error.source == source
    assert f"redirected off HTTPS to {plain.url}/r.yaml" in error.reason
    assert "downgraded" not in listing.specs
    assert plain.requests == []  # refused before it was asked


# -- GitHub ---------------------------------------------------------------------------------------


def github_repos() -> dict:
    main = {
        "manifests/base/runtimes/torch_distributed.yaml": runtime_yaml(
            "torch-distributed", image="ghcr.io/kubeflow/trainer/torch:1"
        ).encode(),
        "manifests/base/runtimes/kustomization.yaml": KUSTOMIZATION.encode(),
        "manifests/base/runtimes/torchtune/llama.yaml": runtime_yaml(
            "torchtune-llama", command=["tune", "run"], framework=None
        ).encode(),
        "manifests/base/runtimes/deepspeed.yaml": runtime_yaml(
            "deepspeed-distributed", framework="deepspeed", policy="mpi", nproc=1
        ).encode(),
        "charts/template.yaml": b"{{ .Values.broken }}: [",
    }
    team = {
        "ml/runtimes/big.yaml": runtime_yaml("team-big", num_nodes=4).encode(),
        "README.md": b"# team",
    }
    return {
        ("kubeflow", "trainer", "main"): main,
        ("kubeflow", "trainer", "v2.0.0"): {
            "manifests/base/runtimes/torch_distributed.yaml": runtime_yaml(
                "torch-distributed", image="ghcr.io/kubeflow/trainer/torch:0.9"
            ).encode()
        },
        ("myorg", "myrepo", "main"): team,
        ("myorg", "flat", "main"): {"r.yaml": runtime_yaml("flat-one").encode()},
    }


def test_github_reads_the_kubeflow_layout_folder_recursively(tmp_path, clock):
    with github_server(github_repos()) as api:
        listing = catalog(
            ["github://kubeflow/trainer"], tmp_path, clock, github_api_url=api.url
        ).load()
    assert listing.errors == []  # charts/ is outside the runtimes folder; kustomization skipped
    assert names(listing) == ["deepspeed-distributed", "torch-distributed", "torchtune-llama"]
    torch = listing.specs["torch-distributed"]
    assert torch.runtime.trainer.image == "ghcr.io/kubeflow/trainer/torch:1"
    assert torch.runtime.origin == (
        "github://kubeflow/trainer/manifests/base/runtimes/torch_distributed.yaml"
    )
    llama = listing.specs["torchtune-llama"].runtime.trainer
    assert (llama.trainer_type.value, llama.framework) == ("BuiltinTrainer", "torch")
    assert listing.specs["deepspeed-distributed"].ml_policy == "mpi"


def test_github_path_ref_file_and_root(tmp_path, clock):
    with github_server(github_repos()) as api:
        listing = catalog(
            [
                "github://myorg/myrepo/ml/runtimes",
                "github://kubeflow/trainer@v2.0.0",
                "github://kubeflow/trainer/manifests/base/runtimes/torch_distributed.yaml",
                "github://myorg/flat",  # no manifests/base/runtimes: the repository root
            ],
            tmp_path,
            clock,
            github_api_url=api.url,
        ).load()
    assert listing.errors == []
    assert names(listing) == ["team-big", "torch-distributed", "flat-one"]
    assert listing.specs["team-big"].runtime.trainer.num_nodes == 4
    torch = listing.specs["torch-distributed"].runtime
    assert torch.trainer.image == "ghcr.io/kubeflow/trainer/torch:0.9"  # the @v2.0.0 source won
    assert torch.origin.endswith("torch_distributed.yaml@v2.0.0")


def test_github_token_is_sent_to_the_api_and_never_shown(tmp_path, clock):
    from prefect_kubeflow.blocks import TrainingRuntimeSource

    with github_server(github_repos()) as api:
        block = TrainingRuntimeSource(
            sources=["github://myorg/myrepo/ml/runtimes", "github://nobody/missing"],
            github_api_url=api.url,
            github_token="ghp_s3cret",
            allow_http=True,
            cache_dir=str(tmp_path / "cache"),
        )
        listing = block.get_catalog(clock=clock).load()
    assert {r["headers"].get("Authorization") for r in api.requests} == {"Bearer ghp_s3cret"}
    assert "team-big" in listing.specs
    [error] = listing.errors
    assert isinstance(error, RuntimeFetchError) and error.status == 404
    assert "ghp_s3cret" not in str(error) and "ghp_s3cret" not in repr(block)
    assert "ghp_s3cret" not in block.model_dump_json()


def test_errors_keep_their_cause_except_a_request_holding_the_token(tmp_path, clock):
    bad = tmp_path / "malformed.yaml"
    bad.write_bytes(b"kind: [unclosed")
    listing = catalog(
        [str(bad), "github://o/r"],
        tmp_path,
        clock,
        github_api_url="http://127.0.0.1:9",  # nothing listens: connection refused
        github_token="ghp_s3cret",
    ).load()
    parse_error, fetch_error = listing.errors
    assert isinstance(parse_error.__cause__, yaml.YAMLError)
    # A requests exception keeps its request, headers and token included: it is never shown.
    assert isinstance(fetch_error, RuntimeFetchError) and fetch_error.__cause__ is None
    shown = "".join(
        traceback.format_exception(type(fetch_error), fetch_error, fetch_error.__traceback__)
    )
    assert "cannot connect to 127.0.0.1:9" in shown and "ghp_s3cret" not in shown
    assert "direct cause" not in shown and "During handling" not in shown


# -- cache ----------------------------------------------------------------------------------------


def test_cache_hit_expiry_and_refresh(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("cached", image="v:1").encode()
        runtimes = catalog([f"{server.url}/r.yaml"], tmp_path, clock, pin_images=False)
        assert runtimes.get("cached").runtime.trainer.image == "v:1"
        assert len(server.requests) == 1
        server.files["/r.yaml"] = runtime_yaml("cached", image="v:2").encode()
        clock.now += DAY - 1
        assert runtimes.get("cached").runtime.trainer.image == "v:1"  # within the TTL
        assert len(server.requests) == 1
        # Another catalog (another process) shares the cache on disk.
        assert catalog([f"{server.url}/r.yaml"], tmp_path, clock).get("cached")
        assert len(server.requests) == 1
        assert runtimes.get("cached", refresh=True).runtime.trainer.image == "v:2"
        assert len(server.requests) == 2
        server.files["/r.yaml"] = runtime_yaml("cached", image="v:3").encode()
        clock.now += DAY + 1
        assert runtimes.get("cached").runtime.trainer.image == "v:3"  # expired: fetched again
        assert len(server.requests) == 3


def test_a_remote_runtime_keeps_the_image_it_was_first_read_with(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("torchy", image="torch:2.7.1").encode()
        source = f"{server.url}/r.yaml"
        assert catalog([source], tmp_path, clock).get("torchy").runtime.trainer.image == (
            "torch:2.7.1"
        )
        # Upstream moves the image: another process, fetching afresh, still gets the pinned
        # one, and a warning naming both.
        server.files["/r.yaml"] = runtime_yaml("torchy", image="torch:2.13.0").encode()
        with pytest.warns(RuntimeSourceWarning, match="now names image 'torch:2.13.0'; jobs keep "):
            pinned = catalog([source], tmp_path, clock).get("torchy", refresh=True)
        assert pinned.runtime.trainer.image == "torch:2.7.1"
        # Asked for: the source's image is followed.
        followed = catalog([source], tmp_path, clock, pin_images=False).get("torchy")
        assert followed.runtime.trainer.image == "torch:2.13.0"
        # A local file is the user's own: never pinned.
        local = tmp_path / "mine.yaml"
        local.write_text(runtime_yaml("mine", image="a:1"))
        assert catalog([str(local)], tmp_path, clock).get("mine").runtime.trainer.image == "a:1"
        local.write_text(runtime_yaml("mine", image="a:2"))
        assert catalog([str(local)], tmp_path, clock).get("mine").runtime.trainer.image == "a:2"


def test_the_builtin_runtime_and_default_image_are_pinned_by_digest(tmp_path, clock):
    from prefect_kubeflow import constants

    builtin = catalog([], tmp_path, clock).get("torch-distributed")
    assert builtin.runtime.trainer.image == constants.DEFAULT_FRAMEWORK_IMAGES["torch"]
    repository, _, digest = builtin.runtime.trainer.image.partition("@")
    assert repository == "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime"
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64


def test_the_ttl_is_configurable(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("short").encode()
        runtimes = RuntimeCatalog(
            [f"{server.url}/r.yaml"],
            cache_dir=tmp_path,
            cache_ttl_seconds=60,
            http=HttpSettings(allow_http=True),
            clock=clock,
        )
        runtimes.load()
        clock.now += 59
        runtimes.load()
        assert len(server.requests) == 1
        clock.now += 2
        runtimes.load()
        assert len(server.requests) == 2


def test_network_down_serves_the_stale_cache_then_builtins(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("remote-only").encode()
        url = f"{server.url}/r.yaml"
        catalog([url], tmp_path, clock).load()
    clock.now += 3 * DAY  # expired, and the server is gone
    with pytest.warns(RuntimeSourceWarning, match=r"serving the copy cached 72\.0 h ago"):
        listed = catalog([url], tmp_path, clock).list_runtimes()
    assert [s.runtime.name for s in listed] == ["remote-only", "torch-distributed"]
    # With no cache at all, the built-ins still serve.
    fresh = catalog([url], tmp_path / "empty", clock).load()
    [error] = fresh.errors
    assert isinstance(error, RuntimeFetchError) and "cannot connect to 127.0.0.1" in error.reason
    assert names(fresh) == ["torch-distributed"]


def test_a_damaged_cache_file_is_a_miss(tmp_path, clock):
    with file_server() as server:
        server.files["/r.yaml"] = runtime_yaml("sturdy").encode()
        runtimes = catalog([f"{server.url}/r.yaml"], tmp_path, clock)
        runtimes.load()
        for entry in (tmp_path / "cache").glob("*.json"):
            entry.write_text("{not json")
        assert "sturdy" in runtimes.load().specs
        assert len(server.requests) == 2


# -- bad sources: each a typed error naming the source; the good ones after it still serve ----


BAD_DOCUMENTS = {
    "malformed.yaml": (b"kind: [unclosed", "malformed YAML"),
    "wrong-kind.yaml": (
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "no ClusterTrainingRuntime or TrainingRuntime document (found kind 'ConfigMap')",
    ),
    "no-node.yaml": (
        runtime_yaml("no-node").replace("name: node", "name: launcher").encode(),
        "no replicated job named 'node'",
    ),
    "bomb.yaml": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode()
            for i in range(8)
        ),
        "expands to more than 100000 YAML nodes (an alias bomb?)",
    ),
    "big.yaml": (b"# " + b"x" * (1024 * 1024) + b"\n", "over the limit of 1048576 bytes"),
    "bad-nproc.yaml": (
        runtime_yaml("bad-nproc", nproc="many").encode(),
        "field spec.mlPolicy.torch.numProcPerNode",
    ),
    "zero-nodes.yaml": (
        runtime_yaml("zero-nodes", num_nodes=0).encode(),
        "field spec.mlPolicy.numNodes: Input should be greater than or equal to 1",
    ),
    "bad-name.yaml": (runtime_yaml("Bad_Name").encode(), "field metadata.name"),
    "latin1.yaml": (b"kind: caf\xe9\n", "not UTF-8 text"),
    "bad-date.yaml": (b"release: 2024-13-01\n", "malformed YAML: month must be in 1..12"),
    "text-bomb.yaml": (
        b"a: &s " + b"x" * 200_000 + b"\nb: [" + b", ".join([b"*s"] * 30) + b"]\n",
        "its aliases expand to more than 4194304 bytes of text",
    ),
}


@pytest.mark.parametrize("filename", sorted(BAD_DOCUMENTS))
def test_bad_documents_over_https_and_on_disk(filename, tmp_path, clock):
    content, reason = BAD_DOCUMENTS[filename]
    good = tmp_path / "good.yaml"
    good.write_text(runtime_yaml("good"))
    bad = tmp_path / filename
    bad.write_bytes(content)
    with file_server() as server:
        server.files[f"/{filename}"] = content
        url = f"{server.url}/{filename}"
        listing = catalog([url, str(bad), str(good)], tmp_path, clock).load()
    assert [type(e) for e in listing.errors] == [RuntimeParseError, RuntimeParseError]
    assert [e.source for e in listing.errors] == [url, str(bad)]
    for error in listing.errors:
        assert reason in error.reason, error
    assert names(listing) == ["good", "torch-distributed"]


@pytest.mark.parametrize(
    ("source", "error_type", "reason"),
    [
        ("ftp://example.com/r.yaml", InvalidRuntimeSourceError, "unknown scheme 'ftp'"),
        ("runtimes/local.yaml", InvalidRuntimeSourceError, "a relative path"),
        ("", InvalidRuntimeSourceError, "empty"),
        ("github://only-owner", InvalidRuntimeSourceError, "expected github://owner/repo"),
        ("github://o/r/../etc", InvalidRuntimeSourceError, "malformed"),
        ("file://otherhost/x.yaml", InvalidRuntimeSourceError, "not host 'otherhost'"),
        ("/does/not/exist.yaml", RuntimeFetchError, "no such file or folder"),
        ("https://127.0.0.1:9/r.yaml", RuntimeFetchError, "cannot connect to 127.0.0.1:9"),
        ("https://[::1/r.yaml", InvalidRuntimeSourceError, "not a valid URL"),
        ("file://", InvalidRuntimeSourceError, "needs an absolute path"),
        ("github://../x/y", InvalidRuntimeSourceError, "expected github://owner/repo"),
    ],
)
def test_bad_sources_are_typed_and_do_not_hide_the_next(
    source, error_type, reason, tmp_path, clock
):
    good = tmp_path / "good.yaml"
    good.write_text(runtime_yaml("good"))
    runtimes = catalog([source, str(good)], tmp_path, clock)
    listing = runtimes.load()
    [error] = listing.errors
    assert type(error) is error_type and isinstance(error, RuntimeSourceError)
    assert error.source == source and reason in error.reason
    assert names(listing) == ["good", "torch-distributed"]
    with pytest.warns(RuntimeSourceWarning, match="runtime source"):
        runtimes.list_runtimes()


def test_http_error_statuses_name_the_url(tmp_path, clock):
    with file_server() as server:
        server.files["/gone.yaml"] = (500, b"boom")
        listing = catalog(
            [f"{server.url}/missing.yaml", f"{server.url}/gone.yaml"], tmp_path, clock
        ).load()
    assert [(type(e), e.status) for e in listing.errors] == [
        (RuntimeFetchError, 404),
        (RuntimeFetchError, 500),
    ]
    assert f"HTTP 404 Not Found from {server.url}/missing.yaml" in listing.errors[0].reason


def test_a_bad_file_in_a_folder_does_not_hide_its_neighbours(tmp_path, clock):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.yaml").write_text("kind: [")
    (folder / "b.yaml").write_text(runtime_yaml("neighbour"))
    listing = catalog([str(folder)], tmp_path, clock).load()
    [error] = listing.errors
    assert error.source == str(folder / "a.yaml")
    assert "neighbour" in listing.specs
    # Cached with the folder's fingerprint, the error is reported again on the warm path.
    again = catalog([str(folder)], tmp_path, clock).load()
    assert [str(e) for e in again.errors] == [str(error)]


def test_not_found_names_the_sources_that_failed(tmp_path, clock):
    runtimes = catalog(["https://127.0.0.1:9/team.yaml"], tmp_path, clock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeSourceWarning)
        with pytest.raises(RuntimeNotFoundError) as raised:
            runtimes.get("team-runtime")
    assert "known: torch-distributed" in str(raised.value)
    assert "sources that failed to load: https://127.0.0.1:9/team.yaml" in str(raised.value)


def test_a_file_that_fails_to_fetch_never_replaces_a_good_cached_copy(tmp_path, clock):
    with file_server() as server:
        server.files["/a.yaml"] = runtime_yaml("idx-a").encode()
        server.files["/b.yaml"] = runtime_yaml("idx-b").encode()
        server.files["/index.yaml"] = b"- a.yaml\n- b.yaml\n"
        runtimes = catalog([f"{server.url}/index.yaml"], tmp_path, clock, pin_images=False)
        assert {"idx-a", "idx-b"} <= set(runtimes.load().specs)
        clock.now += DAY + 1
        server.files["/a.yaml"] = (503, b"busy")
        listing = runtimes.load()
        assert {"idx-a", "idx-b"} <= set(listing.specs)  # the cached copy, as a whole
        [stale] = listing.errors
        assert "serving the copy cached" in stale.reason and "HTTP 503" in stale.reason
        server.files["/a.yaml"] = runtime_yaml("idx-a", image="new:1").encode()
        clock.now += 60  # the partial result was not cached: the next call fetches again
        assert runtimes.get("idx-a").runtime.trainer.image == "new:1"


def test_github_limits_files_across_folders(tmp_path, clock, monkeypatch):
    from prefect_kubeflow.runtimes import github

    monkeypatch.setattr(github, "MAX_FILES", 3)
    repo = {f"r/{d}/{f}.yaml": runtime_yaml(f"{d}-{f}").encode() for d in "xyz" for f in "ab"}
    with github_server({("o", "many", "main"): repo}) as api:
        listing = catalog(["github://o/many/r"], tmp_path, clock, github_api_url=api.url).load()
    [error] = listing.errors
    assert isinstance(error, RuntimeFetchError) and "more than 3 YAML files" in error.reason


def test_the_token_never_travels_over_plain_http(tmp_path, clock):
    with github_server(github_repos()) as api:
        runtimes = catalog(
            ["github://myorg/myrepo/ml/runtimes"],
            tmp_path,
            clock,
            allow_http=False,
            github_api_url=api.url,
            github_token="ghp_s3cret",
        )
        listing = runtimes.load()
    assert api.requests == []
    [error] = listing.errors
    assert isinstance(error, InvalidRuntimeSourceError) and "github_api_url" in error.reason
    assert "ghp_s3cret" not in repr(runtimes.http)


def test_a_missing_ca_bundle_is_a_typed_error(tmp_path, clock):
    context, _ = self_signed_tls(tmp_path)
    with file_server(tls=context) as server:
        server.files["/r.yaml"] = runtime_yaml("x").encode()
        listing = catalog(
            [f"{server.url}/r.yaml"], tmp_path, clock, ca_bundle=str(tmp_path / "nope.pem")
        ).load()
    [error] = listing.errors
    assert isinstance(error, RuntimeFetchError) and "nope.pem" in error.reason


def test_a_cache_of_the_wrong_shape_is_a_miss_and_an_unwritable_one_a_warning(tmp_path, clock):
    path = tmp_path / "r.yaml"
    path.write_text(runtime_yaml("local"))
    runtimes = catalog([str(path)], tmp_path, clock)
    runtimes.load()
    for entry in (tmp_path / "cache").glob("*.json"):
        entry.write_text("null")
    assert "local" in runtimes.load().specs
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    unwritable = RuntimeCatalog([str(path)], cache_dir=blocked / "cache", clock=clock)
    with pytest.warns(RuntimeSourceWarning, match="cannot be written"):
        assert "local" in unwritable.load().specs
