//! The evaluator's native hot path (alertpipe.workers.evaluator.native): a consumed batch's
//! records in the common shape decoded, checked and keyed in one call.
//!
//! It does only what `records.decode_batch` (pure Python) does for a record in the common shape:
//! `orjson.loads` (the same decoder, passed in: the dicts are the same), `events.common_shape`,
//! the event-time bound, and the dedup key `head + blake2b(scope deviceId \x1f seq, 12)`. Every
//! other record (a consumer error, no value, many brackets, not JSON, not the common shape, ahead
//! of the clock, a seq or ts beyond 64 bits, text that is not UTF-8) goes to `slow(msg)`, the pure
//! Python path for one record, which answers `(item | None, key | None)`. A differential property
//! test holds the two paths equal (tests/unit/evaluator/test_native_decode.py).

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

const MAX_NESTING: usize = 254; // events.MAX_NESTING: more brackets than this, Python measures it
const MAX_DEVICE_ID: usize = 256; // events.MAX_DEVICE_ID (code points)
const MAX_TYPE: usize = 128; // events.MAX_TYPE (code points)
const MIN_TS_MS: i64 = 946_684_800_000; // events.MIN_TS_MS
const MAX_TS_MS: i64 = 7_258_118_400_000; // events.MAX_TS_MS
const KEY_DIGEST: usize = 12; // redis_state.dedup_keys: blake2b(digest_size=12)
const GIL_EVERY: usize = 256; // records between two points where another thread may take the GIL

/// A str of 1..=max code points (exactly str), or None.
fn bounded_str<'py>(v: &Bound<'py, PyAny>, max: usize) -> Option<Bound<'py, PyString>> {
    let s = v.downcast_exact::<PyString>().ok()?;
    let n = s.len().ok()?;
    if n == 0 || n > max {
        return None;
    }
    Some(s.clone())
}

/// An int (exactly int, not bool) that fits in 64 bits, or None.
fn exact_int(v: &Bound<'_, PyAny>) -> Option<i64> {
    if !v.is_exact_instance_of::<pyo3::types::PyInt>() {
        return None;
    }
    v.extract::<i64>().ok()
}

/// The decimal digits of ``n`` (as Python's ``b"%d"``), written at the end of ``buf``.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

struct Names<'py> {
    error: &'py Bound<'py, PyString>,
    value: &'py Bound<'py, PyString>,
    partition: &'py Bound<'py, PyString>,
    offset: &'py Bound<'py, PyString>,
    tenant: &'py Bound<'py, PyString>,
    device: &'py Bound<'py, PyString>,
    seq: &'py Bound<'py, PyString>,
    ts: &'py Bound<'py, PyString>,
    typ: &'py Bound<'py, PyString>,
}

/// The common case of one record: (item, key) or None (then the Python path decides).
#[allow(clippy::too_many_arguments)]
fn fast<'py>(
    py: Python<'py>,
    n: &Names<'py>,
    msg: &Bound<'py, PyAny>,
    tenant: &str,
    ts_limit: i64,
    key: Option<(&[u8], &[u8])>,
    loads: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyTuple>, Option<Bound<'py, PyBytes>>)>> {
    if !msg.call_method0(n.error)?.is_none() {
        return Ok(None);
    }
    let raw = msg.call_method0(n.value)?;
    let Ok(bytes) = raw.downcast_exact::<PyBytes>() else { return Ok(None) };
    let data = bytes.as_bytes();
    // only a record of 2 * (MAX_NESTING + 1) bytes or more can nest deeper than MAX_NESTING
    if data.len() >= 2 * (MAX_NESTING + 1)
        && data.iter().filter(|&&b| b == b'[' || b == b'{').count() > MAX_NESTING
    {
        return Ok(None);
    }
    let obj = match loads.call1((bytes,)) {
        Ok(o) => o,
        Err(_) => return Ok(None), // not JSON: the Python path names the reason
    };
    let Ok(d) = obj.downcast_exact::<PyDict>() else { return Ok(None) };
    // events.common_shape
    let Some(t) = d.get_item(n.tenant)? else { return Ok(None) };
    let Ok(t) = t.downcast_exact::<PyString>() else { return Ok(None) };
    match t.to_str() {
        Ok(s) if s == tenant => {}
        _ => return Ok(None),
    }
    let Some(dev) = d.get_item(n.device)? else { return Ok(None) };
    let Some(dev) = bounded_str(&dev, MAX_DEVICE_ID) else { return Ok(None) };
    let Some(seq_obj) = d.get_item(n.seq)? else { return Ok(None) };
    let Some(seq) = exact_int(&seq_obj) else { return Ok(None) };
    if seq < 0 {
        return Ok(None);
    }
    let Some(ts_obj) = d.get_item(n.ts)? else { return Ok(None) };
    let Some(ts) = exact_int(&ts_obj) else { return Ok(None) };
    if !(MIN_TS_MS..MAX_TS_MS).contains(&ts) {
        return Ok(None);
    }
    let Some(typ) = d.get_item(n.typ)? else { return Ok(None) };
    if bounded_str(&typ, MAX_TYPE).is_none() {
        return Ok(None);
    }
    if ts > ts_limit {
        return Ok(None); // ahead of the clock: the Python path words the reason
    }
    let k = match key {
        None => None,
        Some((head, scope)) => {
            let Ok(dev_text) = dev.to_str() else { return Ok(None) };
            let mut h = Blake2bVar::new(KEY_DIGEST).map_err(|e| PyValueError::new_err(e.to_string()))?;
            h.update(scope);
            h.update(dev_text.as_bytes());
            h.update(b"\x1f");
            let mut digits = [0u8; 20];
            h.update(decimal(seq as u64, &mut digits));
            let mut out = Vec::with_capacity(head.len() + KEY_DIGEST);
            out.extend_from_slice(head);
            out.resize(head.len() + KEY_DIGEST, 0);
            h.finalize_variable(&mut out[head.len()..])
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            Some(PyBytes::new(py, &out))
        }
    };
    let p = msg.call_method0(n.partition)?;
    let off = msg.call_method0(n.offset)?;
    let item = PyTuple::new(py, [msg.clone(), p, off, d.clone().into_any(), dev.into_any(), seq_obj, ts_obj])?;
    Ok(Some((item, k)))
}

/// (items, keys, partitions, offsets) of a batch, as `records.decode_batch` builds them (without a
/// track filter or a topic schema). `key_head`/`key_scope`: the dedup key's parts (None: no dedup).
#[pyfunction]
#[pyo3(signature = (msgs, tenant, ts_limit, key_head, key_scope, loads, slow))]
#[allow(clippy::too_many_arguments)]
fn decode_common<'py>(
    py: Python<'py>,
    msgs: &Bound<'py, PyList>,
    tenant: &str,
    ts_limit: i64,
    key_head: Option<&[u8]>,
    key_scope: &[u8],
    loads: &Bound<'py, PyAny>,
    slow: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>)> {
    let n = Names {
        error: intern!(py, "error"),
        value: intern!(py, "value"),
        partition: intern!(py, "partition"),
        offset: intern!(py, "offset"),
        tenant: intern!(py, "tenant"),
        device: intern!(py, "deviceId"),
        seq: intern!(py, "seq"),
        ts: intern!(py, "ts"),
        typ: intern!(py, "type"),
    };
    let key = key_head.map(|h| (h, key_scope));
    let items = PyList::empty(py);
    let keys = PyList::empty(py);
    let ps = PyList::empty(py);
    let offs = PyList::empty(py);
    for (i, msg) in msgs.iter().enumerate() {
        if i % GIL_EVERY == GIL_EVERY - 1 {
            // a point where the GIL may change hands, as the interpreter's loop has every 5 ms: the
            // dedup thread sends and reads its round trips meanwhile (a batch takes ~10 ms here)
            py.allow_threads(|| ());
        }
        let (item, k) = match fast(py, &n, &msg, tenant, ts_limit, key, loads)? {
            Some(found) => found,
            None => {
                let answer = slow.call1((&msg,))?;
                let (item, k): (Bound<'py, PyAny>, Bound<'py, PyAny>) = answer.extract()?;
                if item.is_none() {
                    continue;
                }
                let item = item.downcast_into::<PyTuple>()?;
                let k = if k.is_none() { None } else { Some(k.downcast_into::<PyBytes>()?) };
                (item, k)
            }
        };
        if let Some(k) = k {
            keys.append(k)?;
            ps.append(item.get_item(1)?)?;
            offs.append(item.get_item(2)?)?;
        }
        items.append(item)?;
    }
    Ok((items, keys, ps, offs))
}

#[pymodule]
fn _evalcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_common, m)?)?;
    Ok(())
}
