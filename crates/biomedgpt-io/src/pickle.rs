//! A small pickle reader for PyTorch checkpoints (`torch.save`, zip format). It runs the pickle
//! opcodes that state dicts use and turns `torch._utils._rebuild_tensor_v2` calls into tensor
//! references (storage key, dtype, offset, shape, stride). Nothing is executed: unknown globals
//! stay inert values.

use crate::dtype::SourceDType;

// Payloads of inert values are kept so that error messages can show them.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage { key: String, dtype: SourceDType },
    Tensor(TensorRef),
    Object(Box<Value>, Box<Value>),
    Mark,
}

#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    pub storage_key: String,
    pub dtype: SourceDType,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("pickle: unterminated line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
}

fn as_usize_list(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!("expected a non-negative int, found {other:?}")),
            })
            .collect(),
        other => Err(format!("expected a tuple of ints, found {other:?}")),
    }
}

/// `persistent_load` for torch's zip format: `('storage', StorageType, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("unexpected persistent id {pid:?}"));
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(_, storage), Value::Str(key), ..] if kind == "storage" => {
            let dtype = SourceDType::from_torch_storage(storage)
                .ok_or_else(|| format!("unsupported storage type {storage}"))?;
            Ok(Value::Storage {
                key: key.clone(),
                dtype,
            })
        }
        _ => Err(format!("unexpected persistent id {items:?}")),
    }
}

fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &callable else {
        return Ok(Value::Object(Box::new(callable), Box::new(args)));
    };
    let args_vec = match &args {
        Value::Tuple(a) => a.clone(),
        _ => Vec::new(),
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let [storage, offset, shape, stride, ..] = args_vec.as_slice() else {
                return Err("_rebuild_tensor_v2 with too few arguments".into());
            };
            let Value::Storage { key, dtype } = storage else {
                return Err(format!("tensor without storage: {storage:?}"));
            };
            let Value::Int(offset) = offset else {
                return Err("tensor storage offset is not an int".into());
            };
            let offset = usize::try_from(*offset).map_err(|_| format!("tensor storage offset {offset} is negative"))?;
            Ok(Value::Tensor(TensorRef {
                storage_key: key.clone(),
                dtype: *dtype,
                offset,
                shape: as_usize_list(shape)?,
                stride: as_usize_list(stride)?,
            }))
        }
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            Ok(args_vec.into_iter().next().unwrap_or(Value::None))
        }
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Vec::new())),
        _ => Ok(Value::Object(Box::new(callable), Box::new(args))),
    }
}

/// Deepest nesting of containers a checkpoint's pickle may build (state dicts nest a few levels;
/// `Value` is dropped and cloned recursively, so depth must be bounded before it is built).
const MAX_DEPTH: u32 = 512;

/// Size and depth of a value on the pickle machine's stack.
#[derive(Clone, Copy)]
struct Meta {
    depth: u32,
    /// Values in it, itself included.
    nodes: u64,
}

const LEAF: Meta = Meta { depth: 0, nodes: 1 };

/// The pickle machine's stack, each value with its [`Meta`], and the bounds on what it builds:
/// nesting ([`MAX_DEPTH`]) and values copied out of the memo, which can grow exponentially with the
/// file ("billion laughs": each GET copies a value that holds two earlier ones).
struct Machine {
    stack: Vec<(Value, Meta)>,
    memo: std::collections::HashMap<u32, (Value, Meta)>,
    copied: u64,
    budget: u64,
}

impl Machine {
    fn push(&mut self, v: Value, m: Meta) -> Result<(), String> {
        if m.depth > MAX_DEPTH {
            return Err(format!("pickle nests containers deeper than {MAX_DEPTH} levels: not a checkpoint"));
        }
        self.stack.push((v, m));
        Ok(())
    }

    fn leaf(&mut self, v: Value) -> Result<(), String> {
        self.push(v, LEAF)
    }

    fn pop(&mut self) -> Result<(Value, Meta), String> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<(Value, Meta)>, String> {
        let at = self.stack.iter().rposition(|(v, _)| matches!(v, Value::Mark)).ok_or("pickle: no mark")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    /// A container of `items`.
    fn container(items: &[Meta]) -> Meta {
        Meta {
            depth: 1 + items.iter().map(|m| m.depth).max().unwrap_or(0),
            nodes: 1 + items.iter().map(|m| m.nodes).sum::<u64>(),
        }
    }

    fn push_container(&mut self, make: impl FnOnce(Vec<Value>) -> Value, items: Vec<(Value, Meta)>) -> Result<(), String> {
        let metas: Vec<Meta> = items.iter().map(|(_, m)| *m).collect();
        let meta = Self::container(&metas);
        self.push(make(items.into_iter().map(|(v, _)| v).collect()), meta)
    }

    /// Counts a copy of `m`'s values against the budget.
    fn charge(&mut self, m: Meta) -> Result<(), String> {
        self.copied = self.copied.saturating_add(m.nodes);
        if self.copied > self.budget {
            return Err(format!(
                "pickle copies more than {} values out of its memo (a {} byte file): memo amplification, not a checkpoint",
                self.budget,
                self.budget / 64
            ));
        }
        Ok(())
    }

    fn memo_put(&mut self, k: u32) -> Result<(), String> {
        let (v, m) = self.stack.last().cloned().ok_or("memo of empty stack")?;
        self.charge(m)?;
        self.memo.insert(k, (v, m));
        Ok(())
    }

    fn memo_get(&mut self, k: u32) -> Result<(), String> {
        let (v, m) = self.memo.get(&k).cloned().ok_or(format!("memo {k} missing"))?;
        self.charge(m)?;
        self.push(v, m)
    }

    /// Adds `added` (a key and value, or list items) into the container on top of the stack.
    fn grow_top(&mut self, added: &[Meta]) -> Result<(), String> {
        let top = self.stack.last_mut().ok_or("pickle stack underflow")?;
        let grown = Machine::container(added);
        top.1 = Meta { depth: top.1.depth.max(grown.depth), nodes: top.1.nodes + grown.nodes - 1 };
        if top.1.depth > MAX_DEPTH {
            return Err(format!("pickle nests containers deeper than {MAX_DEPTH} levels: not a checkpoint"));
        }
        Ok(())
    }
}

/// Runs a pickle program and returns the top-level value.
pub(crate) fn load(data: &[u8]) -> Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    // A real state dict copies each memoized value once or twice: 64 values per byte of pickle is
    // far beyond that and still small.
    let budget = 64 * data.len() as u64 + 1_000_000;
    let mut m = Machine { stack: Vec::new(), memo: std::collections::HashMap::new(), copied: 0, budget };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.take(8)?; // FRAME
            }
            b'.' => return m.pop().map(|(v, _)| v),
            b'}' => m.push(Value::Dict(Vec::new()), Meta { depth: 1, nodes: 1 })?,
            b']' => m.push(Value::List(Vec::new()), Meta { depth: 1, nodes: 1 })?,
            b')' => m.push(Value::Tuple(Vec::new()), Meta { depth: 1, nodes: 1 })?,
            b'(' => m.leaf(Value::Mark)?,
            b'N' => m.leaf(Value::None)?,
            0x88 => m.leaf(Value::Bool(true))?,
            0x89 => m.leaf(Value::Bool(false))?,
            b'K' => m.leaf(Value::Int(r.u8()? as i64))?,
            b'M' => m.leaf(Value::Int(r.u16()? as i64))?,
            b'J' => m.leaf(Value::Int(r.u32()? as i32 as i64))?,
            0x8a => {
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                let mut v: i64 = 0;
                for (i, b) in bytes.iter().enumerate().take(8) {
                    v |= (*b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                m.leaf(Value::Int(v))?;
            }
            b'G' => m.leaf(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().unwrap())))?,
            b'X' => {
                let n = r.u32()? as usize;
                m.leaf(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()))?;
            }
            0x8c => {
                let n = r.u8()? as usize;
                m.leaf(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()))?;
            }
            b'V' => {
                let s = r.line()?;
                m.leaf(Value::Str(s))?;
            }
            b'C' => {
                let n = r.u8()? as usize;
                m.leaf(Value::Bytes(r.take(n)?.to_vec()))?;
            }
            b'B' => {
                let n = r.u32()? as usize;
                m.leaf(Value::Bytes(r.take(n)?.to_vec()))?;
            }
            b'q' => {
                let k = r.u8()? as u32;
                m.memo_put(k)?;
            }
            b'r' => {
                let k = r.u32()?;
                m.memo_put(k)?;
            }
            0x94 => {
                let k = m.memo.len() as u32;
                m.memo_put(k)?;
            }
            b'h' => {
                let k = r.u8()? as u32;
                m.memo_get(k)?;
            }
            b'j' => {
                let k = r.u32()?;
                m.memo_get(k)?;
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                m.leaf(Value::Global(module, name))?;
            }
            0x93 => {
                let (name, _) = m.pop()?;
                let (module, _) = m.pop()?;
                match (module, name) {
                    (Value::Str(a), Value::Str(b)) => m.leaf(Value::Global(a, b))?,
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b't' => {
                let items = m.pop_mark()?;
                m.push_container(Value::Tuple, items)?;
            }
            0x85 => {
                let a = m.pop()?;
                m.push_container(Value::Tuple, vec![a])?;
            }
            0x86 => {
                let b = m.pop()?;
                let a = m.pop()?;
                m.push_container(Value::Tuple, vec![a, b])?;
            }
            0x87 => {
                let c = m.pop()?;
                let b = m.pop()?;
                let a = m.pop()?;
                m.push_container(Value::Tuple, vec![a, b, c])?;
            }
            b'Q' => {
                let (pid, meta) = m.pop()?;
                m.push(persistent_load(pid)?, meta)?;
            }
            b'R' | 0x81 => {
                let (args, am) = m.pop()?;
                let (callable, cm) = m.pop()?;
                m.push(reduce(callable, args)?, Machine::container(&[am, cm]))?;
            }
            b'b' => {
                // BUILD: object state (e.g. a state dict's `_metadata`); not needed for weights.
                m.pop()?;
            }
            b's' => {
                let (v, vm) = m.pop()?;
                let (k, km) = m.pop()?;
                m.grow_top(&[km, vm])?;
                match m.stack.last_mut() {
                    Some((Value::Dict(d), _)) => d.push((k, v)),
                    _ => return Err("SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = m.pop_mark()?;
                let metas: Vec<Meta> = items.iter().map(|(_, x)| *x).collect();
                m.grow_top(&metas)?;
                match m.stack.last_mut() {
                    Some((Value::Dict(d), _)) => {
                        let mut it = items.into_iter().map(|(v, _)| v);
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("SETITEMS on a non-dict".into()),
                }
            }
            b'a' => {
                let (v, vm) = m.pop()?;
                m.grow_top(&[vm])?;
                match m.stack.last_mut() {
                    Some((Value::List(l), _)) => l.push(v),
                    _ => return Err("APPEND on a non-list".into()),
                }
            }
            b'e' => {
                let items = m.pop_mark()?;
                let metas: Vec<Meta> = items.iter().map(|(_, x)| *x).collect();
                m.grow_top(&metas)?;
                match m.stack.last_mut() {
                    Some((Value::List(l), _)) => l.extend(items.into_iter().map(|(v, _)| v)),
                    _ => return Err("APPENDS on a non-list".into()),
                }
            }
            b'0' => {
                m.pop()?;
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", r.pos - 1)),
        }
    }
}

/// Flattens nested string-keyed dicts into `a.b.c` -> tensor; non-tensor leaves are dropped.
pub(crate) fn flatten_tensors(value: Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) {
    match value {
        Value::Tensor(t) => out.push((prefix.trim_end_matches('.').to_string(), t)),
        Value::Dict(items) => {
            for (k, v) in items {
                if let Value::Str(k) = k {
                    flatten_tensors(v, &format!("{prefix}{k}."), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect D1 (issue 26): 300 bytes whose memo doubles a value 40 times grew to 7.8 GB and
    /// aborted; now the copies are counted and it is refused at once.
    #[test]
    fn memo_amplification_is_refused() {
        let mut p = b"\x80\x02)q\x00".to_vec();
        for i in 0..40u8 {
            p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        p.extend_from_slice(b"0}.");
        let started = std::time::Instant::now();
        let e = load(&p).unwrap_err();
        assert!(e.contains("memo amplification"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A few legitimate reuses (as torch.save memoizes storage tuples and strings) still load.
        let ok = b"\x80\x02}X\x01\x00\x00\x00aq\x00K\x01sh\x00K\x02s.";
        assert!(matches!(load(ok).unwrap(), Value::Dict(d) if d.len() == 2));
    }

    /// Defect D2 (issue 26): 10^6 nested TUPLE1 (1 MB) or 3x10^5 nested dicts overflowed the
    /// stack (SIGABRT); nesting is now bounded while it is built.
    #[test]
    fn deep_nesting_is_refused() {
        let mut tuples = b"\x80\x02N".to_vec();
        tuples.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        tuples.push(b'.');
        assert!(load(&tuples).unwrap_err().contains("deeper than 512"));
        // {"k": {"k": ... {"k": None}}}: 300,000 dicts and keys pushed, then SETITEMs from the
        // innermost out.
        let mut nested = b"\x80\x02".to_vec();
        for _ in 0..300_000 {
            nested.extend_from_slice(b"}X\x01\x00\x00\x00k");
        }
        nested.push(b'N');
        nested.extend(std::iter::repeat_n(b's', 300_000));
        nested.push(b'.');
        assert!(load(&nested).unwrap_err().contains("deeper than 512"));
        // Lists through APPEND.
        let mut lists = b"\x80\x02".to_vec();
        lists.extend(std::iter::repeat_n(b']', 100_000));
        lists.push(b'N');
        lists.extend(std::iter::repeat_n(b'a', 100_000));
        lists.push(b'.');
        assert!(load(&lists).unwrap_err().contains("deeper than 512"));
    }
}
