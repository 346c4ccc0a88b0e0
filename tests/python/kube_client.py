"""The official Python `kubernetes` client (CertificatesV1Api), unchanged,
against certsign's Kubernetes API face: list, create, read, watch, delete.

Usage: kube_client.py KUBECONFIG CSR_PEM NAME SIGNER_NAME
Prints one line per step and `python kubernetes client: OK` at the end;
any failure raises (non-zero exit).
"""

import base64
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main() -> None:
    kubeconfig, csr_path, name, signer = sys.argv[1:5]
    config.load_kube_config(config_file=kubeconfig)
    api = client.CertificatesV1Api()

    before = api.list_certificate_signing_request()
    print(f"list: {len(before.items)} items, resourceVersion {before.metadata.resource_version}")

    # The watch of the list, started before the create: it must see it.
    seen = []

    def watch_list() -> None:
        w = watch.Watch()
        for event in w.stream(api.list_certificate_signing_request, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["object"].metadata.name == name and event["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watch_list)
    t.start()

    with open(csr_path, "rb") as f:
        request = base64.b64encode(f.read()).decode()
    body = client.V1CertificateSigningRequest(
        api_version="certificates.k8s.io/v1",
        kind="CertificateSigningRequest",
        metadata=client.V1ObjectMeta(name=name, labels={"team": "py"}),
        spec=client.V1CertificateSigningRequestSpec(
            request=request,
            signer_name=signer,
            expiration_seconds=3600,
            usages=["client auth"],
        ),
    )
    created = api.create_certificate_signing_request(body)
    print(f"create: {created.metadata.name} by {created.spec.username}")

    got = api.read_certificate_signing_request(name)
    assert got.metadata.uid == created.metadata.uid, (got.metadata.uid, created.metadata.uid)
    assert got.spec.signer_name == signer
    assert got.spec.expiration_seconds == 3600
    print(f"read: {got.metadata.name} uid {got.metadata.uid}")

    listed = api.list_certificate_signing_request()
    assert name in [i.metadata.name for i in listed.items]
    print(f"list: {len(listed.items)} items")

    # Approval through this face needs a signer that trusts the approver;
    # this signer name needs a signed approval, so it is refused (403).
    got.status.conditions = [
        client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="PythonApprove", message="by the Python client"
        )
    ]
    try:
        api.replace_certificate_signing_request_approval(name, got)
        raise AssertionError("an unsigned approval was accepted for a signed signer name")
    except ApiException as e:
        assert e.status == 403, (e.status, e.body)
        assert "certctl certificate approve" in e.body, e.body
        print(f"approval refused: {e.status}")
    assert not api.read_certificate_signing_request(name).status.conditions

    try:
        api.read_certificate_signing_request("no-such-request")
        raise AssertionError("a missing request was found")
    except ApiException as e:
        assert e.status == 404, e.status
        print(f"read missing: {e.status}")

    deleted = api.delete_certificate_signing_request(name)
    print(f"delete: {deleted['status']}")
    t.join(timeout=15)
    kinds = [k for (k, n) in seen if n == name]
    print(f"watch: {kinds}")
    assert kinds[:1] == ["ADDED"] and kinds[-1:] == ["DELETED"], seen
    print("python kubernetes client: OK")


if __name__ == "__main__":
    main()
