"""migrator/vllm/http.py: the one client for the small requests beside the embeddings."""

from __future__ import annotations

import json
import os

from migrator.vllm.http import Http, Unreachable


def test_a_forked_child_does_not_share_the_parents_connections(server):
    """The crash torture forks `migrate` children from a parent that already talked to the
    server. A child that reused the parent's kept-alive connection read answers meant for
    others and hung (found in CI). Each process must get its own connections."""
    http = Http()
    url = server.root_url + "/version"
    assert http.get(url, timeout=10).status == 200  # the parent keeps a connection alive
    parent_client = http.client
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: several requests on what it inherited
        try:
            statuses = [http.get(url, timeout=10).status for _ in range(5)]
            os.write(w, json.dumps({"statuses": statuses, "own": http.client is not parent_client}).encode())
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    child = json.loads(os.read(r, 4096))
    os.close(r)
    assert status == 0 and child == {"statuses": [200] * 5, "own": True}
    assert http.client is parent_client and http.get(url, timeout=10).status == 200  # the parent's still works


def test_no_answer_is_unreachable_naming_why(dead_endpoint):
    http = Http()
    try:
        http.get(dead_endpoint + "/version", timeout=5)
    except Unreachable as e:
        assert "ConnectError" in str(e)
    else:
        raise AssertionError("a refused connection answered")
