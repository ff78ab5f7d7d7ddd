//! Get-method stacks as plain data, convertible to tycho-vm values and to toncenter's JSON.

use num_bigint::BigInt;
use tycho_types::cell::Cell;
use tycho_vm::{OwnedCellSlice, RcStackValue, StackValue, StackValueType};

use crate::address::Address;
use crate::cells::{from_boc_base64, load_address, to_boc_base64};
use crate::error::{ChainError, Result};

/// One stack entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackItem {
    /// An integer (up to 257 bits).
    Int(BigInt),
    /// A cell.
    Cell(Cell),
    /// A slice (the whole cell).
    Slice(Cell),
    /// Null.
    Null,
    /// A tuple.
    Tuple(Vec<StackItem>),
}

impl StackItem {
    /// An integer entry.
    pub fn int(v: impl Into<BigInt>) -> Self {
        StackItem::Int(v.into())
    }

    /// A 256-bit unsigned integer from bytes.
    pub fn uint256(bytes: &[u8; 32]) -> Self {
        StackItem::Int(BigInt::from_bytes_be(num_bigint::Sign::Plus, bytes))
    }

    /// As an integer that fits `u128` (balances, counters).
    pub fn as_u128(&self) -> Result<u128> {
        match self {
            StackItem::Int(v) => u128::try_from(v).map_err(|_| bad("integer out of u128 range")),
            _ => Err(bad("expected an integer")),
        }
    }

    /// As a 256-bit value.
    pub fn as_u256(&self) -> Result<[u8; 32]> {
        match self {
            StackItem::Int(v) => {
                let (sign, bytes) = v.to_bytes_be();
                if sign == num_bigint::Sign::Minus || bytes.len() > 32 {
                    return Err(bad("not a 256-bit unsigned integer"));
                }
                let mut out = [0u8; 32];
                out[32 - bytes.len()..].copy_from_slice(&bytes);
                Ok(out)
            }
            _ => Err(bad("expected an integer")),
        }
    }

    /// As a boolean (TVM's -1 / 0).
    pub fn as_bool(&self) -> Result<bool> {
        match self {
            StackItem::Int(v) => Ok(*v != BigInt::from(0)),
            _ => Err(bad("expected a boolean")),
        }
    }

    /// As a cell (cells and slices).
    pub fn as_cell(&self) -> Result<Option<Cell>> {
        match self {
            StackItem::Cell(c) | StackItem::Slice(c) => Ok(Some(c.clone())),
            StackItem::Null => Ok(None),
            _ => Err(bad("expected a cell")),
        }
    }

    /// As an address stored in a slice.
    pub fn as_address(&self) -> Result<Address> {
        match self {
            StackItem::Slice(c) | StackItem::Cell(c) => load_address(&mut c.as_slice()?),
            _ => Err(bad("expected an address slice")),
        }
    }

    pub(crate) fn to_vm(&self) -> Result<RcStackValue> {
        Ok(match self {
            StackItem::Int(v) => RcStackValue::new_dyn_value(v.clone()),
            StackItem::Cell(c) => RcStackValue::new_dyn_value(c.clone()),
            StackItem::Slice(c) => {
                RcStackValue::new_dyn_value(OwnedCellSlice::new_allow_exotic(c.clone()))
            }
            StackItem::Null => tycho_vm::Stack::make_null(),
            StackItem::Tuple(items) => {
                let items = items
                    .iter()
                    .map(StackItem::to_vm)
                    .collect::<Result<Vec<_>>>()?;
                RcStackValue::new_dyn_value(items)
            }
        })
    }

    pub(crate) fn from_vm(v: &dyn StackValue) -> Result<Self> {
        Ok(match v.raw_ty() {
            t if t == StackValueType::Null as u8 => StackItem::Null,
            t if t == StackValueType::Int as u8 => match v.as_int() {
                Some(i) => StackItem::Int(i.clone()),
                None => return Err(bad("NaN on the stack")),
            },
            t if t == StackValueType::Cell as u8 => {
                StackItem::Cell(v.as_cell().cloned().ok_or_else(|| bad("cell"))?)
            }
            t if t == StackValueType::Slice as u8 => {
                let s = v.as_cell_slice().ok_or_else(|| bad("slice"))?;
                let cell = tycho_types::cell::CellBuilder::build_from(s.apply())?;
                StackItem::Slice(cell)
            }
            t if t == StackValueType::Tuple as u8 => {
                let items = v.as_tuple().ok_or_else(|| bad("tuple"))?;
                StackItem::Tuple(
                    items
                        .iter()
                        .map(|i| StackItem::from_vm(i.as_ref()))
                        .collect::<Result<_>>()?,
                )
            }
            _ => return Err(bad("unsupported stack value (builder or continuation)")),
        })
    }

    /// toncenter v2 JSON form: `["num", "0x…"]`, `["cell", {"bytes": b64}]`, …
    pub fn to_toncenter(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            StackItem::Int(v) => {
                let s = if v.sign() == num_bigint::Sign::Minus {
                    format!("-0x{:x}", -v)
                } else {
                    format!("0x{v:x}")
                };
                json!(["num", s])
            }
            StackItem::Cell(c) => json!(["cell", {"bytes": to_boc_base64(c)}]),
            StackItem::Slice(c) => json!(["slice", {"bytes": to_boc_base64(c)}]),
            StackItem::Null => json!(["null", null]),
            StackItem::Tuple(items) => {
                json!(["tuple", {"elements": items.iter().map(|i| i.to_toncenter()).collect::<Vec<_>>()}])
            }
        }
    }

    /// Parses toncenter v2 JSON (also the `tvm.*` element form inside tuples).
    pub fn from_toncenter(v: &serde_json::Value) -> Result<Self> {
        let arr = v
            .as_array()
            .ok_or_else(|| bad("stack entry is not [type, value]"))?;
        let (ty, val) = match arr.as_slice() {
            [ty, val] => (ty.as_str().unwrap_or(""), val),
            _ => return Err(bad("stack entry is not [type, value]")),
        };
        let cell_of = |val: &serde_json::Value| -> Result<Cell> {
            let b64 = val
                .get("bytes")
                .and_then(|b| b.as_str())
                .or_else(|| val.as_str())
                .ok_or_else(|| bad("cell without bytes"))?;
            from_boc_base64(b64)
        };
        Ok(match ty {
            "num" | "int" => {
                let s = val
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| val.to_string());
                StackItem::Int(parse_int(&s)?)
            }
            "cell" => StackItem::Cell(cell_of(val)?),
            "slice" => StackItem::Slice(cell_of(val)?),
            "null" => StackItem::Null,
            "tuple" | "list" => {
                let elems = val
                    .get("elements")
                    .and_then(|e| e.as_array())
                    .ok_or_else(|| bad("tuple without elements"))?;
                StackItem::Tuple(elems.iter().map(from_tvm_element).collect::<Result<_>>()?)
            }
            other => return Err(bad_owned(format!("unknown stack entry type {other:?}"))),
        })
    }
}

fn from_tvm_element(v: &serde_json::Value) -> Result<StackItem> {
    if v.is_array() {
        return StackItem::from_toncenter(v);
    }
    let ty = v.get("@type").and_then(|t| t.as_str()).unwrap_or("");
    match ty {
        "tvm.stackEntryNumber" => {
            let n = v
                .pointer("/number/number")
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("number"))?;
            Ok(StackItem::Int(parse_int(n)?))
        }
        "tvm.stackEntryCell" => Ok(StackItem::Cell(from_boc_base64(
            v.pointer("/cell/bytes")
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("cell"))?,
        )?)),
        "tvm.stackEntrySlice" => Ok(StackItem::Slice(from_boc_base64(
            v.pointer("/slice/bytes")
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("slice"))?,
        )?)),
        _ => Err(bad_owned(format!("unknown tuple element {ty:?}"))),
    }
}

fn parse_int(s: &str) -> Result<BigInt> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = match digits.strip_prefix("0x") {
        Some(hex) => BigInt::parse_bytes(hex.as_bytes(), 16),
        None => BigInt::parse_bytes(digits.as_bytes(), 10),
    }
    .ok_or_else(|| bad_owned(format!("not an integer: {s:?}")))?;
    Ok(if neg { -v } else { v })
}

fn bad(what: &str) -> ChainError {
    ChainError::Api(format!("get-method stack: {what}"))
}

fn bad_owned(what: String) -> ChainError {
    ChainError::Api(format!("get-method stack: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toncenter_json_round_trips() {
        let items = [
            StackItem::int(0),
            StackItem::int(-5),
            StackItem::uint256(&[0xff; 32]),
            StackItem::Cell(crate::cells::snake_string(b"hello").unwrap()),
            StackItem::Null,
            StackItem::Tuple(vec![StackItem::int(1), StackItem::int(2)]),
        ];
        for item in items {
            let json = item.to_toncenter();
            assert_eq!(StackItem::from_toncenter(&json).unwrap(), item, "{json}");
        }
        assert!(StackItem::from_toncenter(&serde_json::json!(["num", "0xzz"])).is_err());
        assert!(StackItem::from_toncenter(&serde_json::json!(["blob", 1])).is_err());
    }
}
