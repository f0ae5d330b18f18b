#!/usr/bin/env python3
"""Peak RSS growth of the api while attachments stream through it (docs/benchmarks.md, issue 14).

Usage: python3 xtask/upload-rss.py target/debug/api [sizes in MiB, default 1 2 20 20 20]

Starts the binary in a temporary directory (SQLite, local storage, one HTTP worker), creates an
administrator and a project, then uploads each size over a raw connection in 64 KiB writes and
prints how much the process's peak RSS (VmHWM, reset before each upload) grew.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PORT = 18080
PASSWORD = "plum-orbit-kettle-7"


def main() -> None:
    binary = os.path.abspath(sys.argv[1])
    sizes = [int(s) for s in sys.argv[2:]] or [1, 2, 20, 20, 20]
    workdir = tempfile.mkdtemp(prefix="keel-upload-rss-")
    env = {
        "PATH": os.environ["PATH"],
        "APP__SERVER__PORT": str(PORT),
        "APP__OPS__PORT": "0",
        "APP__SERVER__WORKERS": "1",
    }
    log = open(os.path.join(workdir, "api.log"), "w")
    api = subprocess.Popen([binary], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port()
        subprocess.run(
            [binary, "create-admin", "--email", "root@example.com", "--password-stdin"],
            cwd=workdir, env=env, input=(PASSWORD + "\n").encode(), check=True, capture_output=True,
        )
        token = post("/api/v1/auth/login", {"email": "root@example.com", "password": PASSWORD})["access_token"]
        project = post("/api/v1/projects", {"name": "uploads"}, token)["id"]
        for size in sizes:
            with open(f"/proc/{api.pid}/clear_refs", "w") as f:
                f.write("5")
            before = status_kb(api.pid, "VmHWM")
            answer = upload(project, token, size * 1024 * 1024)
            print(f"{size} MiB: {answer}; peak RSS grew {status_kb(api.pid, 'VmHWM') - before} kB")
    finally:
        api.terminate()
        api.wait()


def wait_for_port() -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the api did not start")


def post(path: str, body: dict, token: str | None = None) -> dict:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(), headers=headers
    )
    return json.load(urllib.request.urlopen(request))


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def upload(project: str, token: str, size: int) -> str:
    boundary = "keel-rss"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    with socket.create_connection(("127.0.0.1", PORT)) as connection:
        connection.sendall(
            (
                f"POST /api/v1/projects/{project}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + size + len(tail)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + head
        )
        chunk = b"k" * 65536
        sent = 0
        while sent < size:
            n = min(len(chunk), size - sent)
            connection.sendall(chunk[:n])
            sent += n
        connection.sendall(tail)
        return connection.recv(200).split(b"\r\n")[0].decode()


if __name__ == "__main__":
    main()
