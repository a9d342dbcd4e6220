"""sslray.cluster against the session's real local Ray."""

from sslray.cluster import warn_if_no_node_matches


def test_a_label_selector_that_no_node_satisfies_is_announced(ray_local, capsys):
    warn_if_no_node_matches({"sslray-role": "data"})
    err = capsys.readouterr().err
    assert "data.label_selector {'sslray-role': 'data'}: no node of this cluster has these labels" in err
    warn_if_no_node_matches(None)
    warn_if_no_node_matches({"sslray-role": "!data"})  # Ray's negation: satisfied by unlabelled nodes
    node_id = ray_local.nodes()[0]["Labels"]["ray.io/node-id"]
    warn_if_no_node_matches({"ray.io/node-id": node_id})
    assert capsys.readouterr().err == ""
