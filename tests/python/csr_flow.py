#!/usr/bin/env python3
"""An outside gRPC client for certsign, built from our .proto files alone.

It generates Python stubs from proto/ with grpcio-tools, then runs the whole
flow against a running approver over mTLS: a user creates a request, an admin
approves it with an ApprovalStatement signed by the `cryptography` package,
the user waits on the watch stream, fetches the certificate and verifies it
against the CA. Nothing here comes from the Rust code: if this passes, the
wire contract is usable by someone who only has the .proto files.

Exit status 0 and a last line "python client: OK" on success.
"""
import argparse
import datetime
import hashlib
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

APPROVAL_CONTEXT = b"certsign.v1.ApprovalStatement"


def generate_stubs(proto_root: str, out: str):
    files = [
        os.path.join("certsign", "v1", f) for f in ("csr.proto", "signer.proto", "approver.proto")
    ]
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        ["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)


def channel(addr, ca, cert, key):
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    return grpc.secure_channel(addr, creds)


def sign(key, message: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        h = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
        return key.sign(message, ec.ECDSA(h))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise SystemExit(f"unsupported admin key type {type(key)}")


def csr_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--approver", required=True)
    p.add_argument("--proto", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--admin-cert", required=True)
    p.add_argument("--admin-key", required=True)
    p.add_argument("--user-cert", required=True)
    p.add_argument("--user-key", required=True)
    p.add_argument("--name", default="python-client")
    a = p.parse_args()

    out = tempfile.mkdtemp(prefix="certsign-py-")
    generate_stubs(a.proto, out)
    from certsign.v1 import approver_pb2_grpc, approver_pb2, csr_pb2  # noqa: E402

    # The user's new key and CSR, made by `cryptography`.
    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a.name)]))
        .sign(key, hashes.SHA256())
    )
    req_pem = req.public_bytes(serialization.Encoding.PEM)

    user = approver_pb2_grpc.ApproverStub(channel(a.approver, a.ca, a.user_cert, a.user_key))
    admin = approver_pb2_grpc.ApproverStub(channel(a.approver, a.ca, a.admin_cert, a.admin_key))

    created = user.CreateCertificateSigningRequest(
        approver_pb2.CreateCertificateSigningRequestRequest(
            certificate_signing_request=csr_pb2.CertificateSigningRequest(
                metadata=csr_pb2.ObjectMeta(name=a.name),
                spec=csr_pb2.CertificateSigningRequestSpec(
                    request=req_pem,
                    signer_name="kubernetes.io/kube-apiserver-client",
                    expiration_seconds=3600,
                    usages=["digital signature", "client auth"],
                ),
            )
        )
    )
    print(f"created {created.metadata.name} uid={created.metadata.uid} requestor={created.spec.username}")

    # The admin reads the request and signs exactly what it saw.
    seen = admin.GetCertificateSigningRequest(approver_pb2.GetCertificateSigningRequestRequest(name=a.name))
    signed_at = csr_pb2.ApprovalStatement().signed_at
    signed_at.FromDatetime(datetime.datetime.now(datetime.timezone.utc))
    stmt = csr_pb2.ApprovalStatement(
        request_uid=seen.metadata.uid,
        request_name=seen.metadata.name,
        csr_sha256=hashlib.sha256(csr_der(seen.spec.request)).digest(),
        signer_name=seen.spec.signer_name,
        usages=list(seen.spec.usages),
        requestor=seen.spec.username,
        decision=csr_pb2.DECISION_APPROVE,
        signed_at=signed_at,
    )
    if seen.spec.HasField("expiration_seconds"):
        stmt.expiration_seconds = seen.spec.expiration_seconds
    stmt_bytes = stmt.SerializeToString()
    admin_key = serialization.load_pem_private_key(open(a.admin_key, "rb").read(), password=None)
    admin_cert = x509.load_pem_x509_certificate(open(a.admin_cert, "rb").read())
    signature = sign(admin_key, APPROVAL_CONTEXT + b"\x00" + stmt_bytes)
    admin.ApproveCertificateSigningRequest(
        approver_pb2.ApproveCertificateSigningRequestRequest(
            name=a.name,
            approval=csr_pb2.SignedStatement(
                statement=stmt_bytes,
                signature=signature,
                certificate_chain=[admin_cert.public_bytes(serialization.Encoding.DER)],
            ),
            reason="PythonApprove",
            message="approved by the python client",
        )
    )
    print("approved")

    # The user waits on the watch stream for the certificate.
    deadline = time.time() + 60
    certificate = b""
    for event in user.WatchCertificateSigningRequests(
        approver_pb2.WatchCertificateSigningRequestsRequest(name=a.name, send_initial_events=True),
        timeout=60,
    ):
        types = {c.type for c in event.object.status.conditions}
        if "Denied" in types or "Failed" in types:
            sys.exit(f"request ended {types}: {[c.message for c in event.object.status.conditions]}")
        if event.object.status.certificate:
            certificate = event.object.status.certificate
            break
        if time.time() > deadline:
            break
    if not certificate:
        sys.exit("no certificate within 60s")

    # Fetch again with Get and verify the leaf against the CA, independently.
    fetched = user.GetCertificateSigningRequest(approver_pb2.GetCertificateSigningRequestRequest(name=a.name))
    assert fetched.status.certificate == certificate, "Get and Watch disagree"
    leaf = x509.load_pem_x509_certificates(certificate)[0]
    ca = x509.load_pem_x509_certificate(open(a.ca, "rb").read())
    leaf.verify_directly_issued_by(ca)
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ), "certificate is not for our key"
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == a.name
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca, "issued a CA certificate"
    print(f"issued serial={leaf.serial_number:x} notAfter={leaf.not_valid_after_utc.isoformat()}")
    print("python client: OK")


if __name__ == "__main__":
    main()
