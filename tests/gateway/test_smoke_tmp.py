def test_smoke(stack):
    r = stack.http.get("/v1/providers"); print(r.status_code, r.text[:600])
    r = stack.http.get("/v1/models"); print(r.status_code, r.text[:600])
    r = stack.http.get("/v1/stats"); print(r.status_code, r.text[:600])
    stack.approve("client")
    body = stack.signed_job()
    r = stack.http.post("/v1/jobs", json=body); print(r.status_code, r.text[:600])
    jid = r.json()["job_id"]
    stack.wait_indexed()
    r = stack.http.get(f"/v1/jobs/{jid}"); print(r.status_code, r.text[:900])
    r = stack.http.post("/v1/jobs", json=body); print(r.status_code, r.text[:600])
