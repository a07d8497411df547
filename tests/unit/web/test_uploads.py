"""The multipart fast path: the usual upload without Werkzeug's parser, the same bytes."""

from __future__ import annotations

import io

import pytest
from flask import Request
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from onemodel.errors import InvalidRequestError
from onemodel.web.uploads import FIELD, read_upload, single_file_part

BOUNDARY = b"----onemodel-test-7d3f9a1c"
IMAGE = b"\xff\xd8\xff\xe0 not really a JPEG \r\n -- \r\n\r\n"


def body(
    data: bytes = IMAGE,
    *,
    boundary: bytes = BOUNDARY,
    headers: bytes = b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n",
    preamble: bytes = b"",
    epilogue: bytes = b"\r\n",
) -> bytes:
    return (
        preamble
        + b"--"
        + boundary
        + b"\r\n"
        + headers
        + b"\r\n"
        + data
        + b"\r\n--"
        + boundary
        + b"--"
        + epilogue
    )


def werkzeug_files(raw: bytes, boundary: bytes = BOUNDARY) -> tuple[dict[str, bytes], list[str]]:
    """Return what Werkzeug's own parser reads: file fields and the names of text fields."""
    request = flask_request(raw, boundary)
    try:
        files = {name: storage.read() for name, storage in request.files.items(multi=True)}
        return files, list(request.form.keys())
    finally:
        request.close()


def flask_request(raw: bytes, boundary: bytes = BOUNDARY) -> Request:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": f"multipart/form-data; boundary={boundary.decode()}",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    return Request(environ)


def test_the_usual_upload_takes_the_fast_path_and_matches_werkzeug() -> None:
    raw = body()
    assert single_file_part(raw, BOUNDARY, FIELD) == IMAGE
    assert werkzeug_files(raw) == ({FIELD: IMAGE}, [])


def test_what_the_werkzeug_test_client_and_curl_send_takes_the_fast_path() -> None:
    builder = EnvironBuilder(
        method="POST", data={FIELD: (io.BytesIO(IMAGE), "photo.jpg", "image/jpeg")}
    )
    try:
        request = Request(builder.get_environ())
        boundary = request.mimetype_params["boundary"].encode()
        assert single_file_part(request.get_data(cache=True), boundary, FIELD) == IMAGE
        assert read_upload(request) == IMAGE
    finally:
        builder.close()


def test_an_empty_file_is_empty_on_both_paths() -> None:
    raw = body(b"")
    assert single_file_part(raw, BOUNDARY, FIELD) == b""
    assert werkzeug_files(raw) == ({FIELD: b""}, [])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(body().replace(b"\r\n", b"\n"), id="LF line breaks"),
        pytest.param(body(preamble=b"preamble\r\n"), id="a preamble"),
        pytest.param(body(IMAGE + b"\r\n--" + BOUNDARY + b"\r\n"), id="a second part"),
        pytest.param(body(b"x--" + BOUNDARY + b"y"), id="the boundary inside the data"),
        pytest.param(
            body(headers=b'Content-Disposition: form-data; name="file"\r\n'), id="no filename"
        ),
        pytest.param(
            body(headers=b'Content-Disposition: form-data; name="image"; filename="a"\r\n'),
            id="another field",
        ),
        pytest.param(
            body(headers=b'Content-Disposition: form-data; name="file";\r\n filename="a"\r\n'),
            id="a continuation line",
        ),
        pytest.param(
            body(
                headers=b'Content-Disposition: form-data; name="file"; filename="a"\r\n'
                b"Content-Transfer-Encoding: base64\r\n"
            ),
            id="another header",
        ),
        pytest.param(
            body(headers=b'Content-Disposition: form-data; name="file"; filename="\xff"\r\n'),
            id="a file name that is not UTF-8",
        ),
        pytest.param(body()[: -len(b"--\r\n")], id="no closing delimiter"),
        pytest.param(b"", id="empty"),
    ],
)
def test_anything_unusual_is_left_to_werkzeug(raw: bytes) -> None:
    assert single_file_part(raw, BOUNDARY, FIELD) is None


def test_a_declined_body_is_still_parsed_by_werkzeug() -> None:
    # A preamble: the fast path declines, Werkzeug reads the body it cached.
    raw = body(preamble=b"ignored preamble\r\n")
    assert single_file_part(raw, BOUNDARY, FIELD) is None
    with flask_request(raw) as request:
        assert read_upload(request) == IMAGE


def test_a_part_without_filename_still_gets_its_explanation() -> None:
    raw = body(headers=b'Content-Disposition: form-data; name="file"\r\n')
    with flask_request(raw) as request, pytest.raises(InvalidRequestError, match="no filename"):
        read_upload(request)


# Biased towards well-formed bodies, so the fast path is taken often enough to compare.
_LINE_BREAKS = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"])
_GOOD_DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a.jpg"'
_HEADER_LINES = st.lists(
    st.sampled_from(
        [
            b'Content-Disposition: form-data; name="file"; filename="a.jpg"',
            b"Content-Disposition: form-data; name=file; filename=a.jpg",
            b'content-disposition:form-data;name="file";filename=""',
            b'Content-Disposition: form-data; name="file"',
            b'Content-Disposition: form-data; name="other"; filename="b.png"',
            b'Content-Disposition: attachment; name="file"; filename="a"',
            b"Content-Type: image/jpeg",
            b"Content-Type: application/octet-stream ",
            b"X-Extra: 1",
            b" folded: line",
            b"no colon here",
            b'Content-Disposition: form-data; name="file"; filename="\xc3\xa9t\xc3\xa9.jpg"',
        ]
    ),
    min_size=0,
    max_size=2,
)
_DATA = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"\r\n", b"\n", b"\r", b"--", b"\r\n\r\n", b"\r\n--" + BOUNDARY[:6]]),
    ),
    max_size=6,
).map(b"".join)
_INSIDE_DATA = st.sampled_from([b""] * 6 + [b"--" + BOUNDARY, b"\r\n--" + BOUNDARY + b"\r\n"])


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    """Bodies near the usual upload: line breaks, headers, data and edges all vary."""
    lines = draw(_LINE_BREAKS), draw(_LINE_BREAKS), draw(_LINE_BREAKS)
    header_lines = draw(_HEADER_LINES)
    if draw(st.integers(0, 2)):
        header_lines.insert(draw(st.integers(0, len(header_lines))), _GOOD_DISPOSITION)
    headers = b"".join(line + lines[0] for line in header_lines)
    parts = [
        draw(st.sampled_from([b""] * 4 + [b"preamble\r\n", b"\r\n", b"\n", b"\r\n\r\n"])),
        b"--" + BOUNDARY + draw(st.sampled_from([b""] * 4 + [b" "])) + lines[1],
        headers,
        lines[2],
        draw(_DATA) + draw(_INSIDE_DATA) + draw(_DATA),
        draw(st.sampled_from([b"\r\n"] * 4 + [b"\n", b""])),
        b"--" + BOUNDARY,
        draw(st.sampled_from([b"--", b"", b"--\r\n", b"--\r\nepilogue"])),
    ]
    return b"".join(parts)


@settings(max_examples=400, deadline=None)
@given(multipart_bodies())
def test_the_fast_path_answers_what_werkzeug_answers(raw: bytes) -> None:
    fast = single_file_part(raw, BOUNDARY, FIELD)
    if fast is None:
        return
    files, fields = werkzeug_files(raw)
    assert files == {FIELD: fast}
    assert fields == []


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n',
            b"content-disposition:form-data;name=file;filename=x\r\nContent-Type: image/png\r\n",
            b"Content-Type: image/jpeg\r\n"
            b'Content-Disposition: form-data; filename=""; name=file\r\n',
            b'Content-Disposition: form-data; name="file"; filename="\xc3\xa9.jpg"  \r\n',
        ]
    ),
    st.sampled_from([b"", b"\r\n"]),
    st.sampled_from([b"", b"\r\n", b"\r\nepilogue"]),
)
def test_well_formed_uploads_take_the_fast_path_with_werkzeugs_bytes(
    data: bytes, headers: bytes, leading: bytes, epilogue: bytes
) -> None:
    raw = body(data.replace(b"--", b"-"), headers=headers, preamble=leading, epilogue=epilogue)
    fast = single_file_part(raw, BOUNDARY, FIELD)
    assert fast is not None
    assert werkzeug_files(raw) == ({FIELD: fast}, [])
