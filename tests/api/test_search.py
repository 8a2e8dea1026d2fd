from __future__ import annotations

from starlette.testclient import TestClient


def _users(api: TestClient, n: int) -> None:
    entries = [
        {
            "request": {"method": "PUT", "url": f"/User/u{i:02d}"},
            "resource": {
                "resourceType": "User",
                "email": f"user{i:02d}@example.org",
                "userName": f"name{i % 3}",
                "twoFactor": {"enabled": i % 2 == 0},
                "data": {"rank": i},
            },
        }
        for i in range(n)
    ]
    res = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert res.status_code == 200


def test_equality_on_top_level_and_dotted_fields(api: TestClient) -> None:
    _users(api, 12)
    by_email = api.get("/User?email=user03@example.org").json()
    assert by_email["resourceType"] == "Bundle"
    assert by_email["type"] == "searchset"
    assert by_email["total"] == 1
    assert by_email["entry"][0]["resource"]["id"] == "u03"
    assert by_email["entry"][0]["search"] == {"mode": "match"}
    assert by_email["entry"][0]["fullUrl"] == "http://testserver/User/u03"
    enabled = api.get("/User?twoFactor.enabled=true").json()
    assert enabled["total"] == 6
    assert all(e["resource"]["twoFactor"]["enabled"] is True for e in enabled["entry"])
    both = api.get("/User?userName=name1&twoFactor.enabled=false").json()
    assert sorted(e["resource"]["id"] for e in both["entry"]) == ["u01", "u07"]
    assert api.get("/User?data.rank=4").json()["total"] == 1
    assert api.get("/User?_id=u01,u02").json()["total"] == 2
    assert api.get("/User?email=nobody@example.org").json() == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "link": [
            {"relation": "first", "url": "/User?email=nobody%40example.org&_page=1"},
            {"relation": "self", "url": "/User?email=nobody%40example.org&_page=1"},
            {"relation": "last", "url": "/User?email=nobody%40example.org&_page=1"},
        ],
        "entry": [],
    }


def test_paging_sort_and_elements(api: TestClient) -> None:
    _users(api, 12)
    page2 = api.get("/User?_count=5&_page=2&_sort=-data.rank").json()
    assert page2["total"] == 12
    assert [e["resource"]["id"] for e in page2["entry"]] == ["u06", "u05", "u04", "u03", "u02"]
    relations = {link["relation"]: link["url"] for link in page2["link"]}
    assert relations == {
        "first": "/User?_count=5&_sort=-data.rank&_page=1",
        "self": "/User?_count=5&_sort=-data.rank&_page=2",
        "previous": "/User?_count=5&_sort=-data.rank&_page=1",
        "next": "/User?_count=5&_sort=-data.rank&_page=3",
        "last": "/User?_count=5&_sort=-data.rank&_page=3",
    }
    ascending = api.get("/User?_sort=email&_count=2").json()
    assert [e["resource"]["id"] for e in ascending["entry"]] == ["u00", "u01"]
    elements = api.get("/User?_id=u01&_elements=email").json()["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "email"}


def test_search_refuses_bad_parameters(api: TestClient) -> None:
    for query in (
        "_count=-1",
        "_count=abc",
        "_count=1001",
        "_page=0",
        "_unknown=1",
        "email[$ne]=x",
        "a..b=1",
        "password=x",
        "twoFactor.secretKey=ABC",
        "_sort=password",
        "_elements=$where",
        "x'%20OR%201=1--=1",
    ):
        res = api.get(f"/User?{query}")
        assert res.status_code == 400, query
        assert res.json()["resourceType"] == "OperationOutcome"


def test_deleted_resources_are_not_found_by_search(api: TestClient) -> None:
    _users(api, 3)
    api.delete("/User/u01")
    assert [e["resource"]["id"] for e in api.get("/User?_sort=id").json()["entry"]] == ["u00", "u02"]
