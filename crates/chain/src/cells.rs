//! Small helpers over `tycho-types` cells: coins, addresses, snake strings, BOCs.

use tycho_types::cell::{Cell, CellBuilder, CellFamily, CellSlice, HashBytes, Load, Store};
use tycho_types::models::StdAddr;
use tycho_types::num::Tokens;

use crate::address::Address;
use crate::error::{ChainError, Result};

/// Stores `coins` (VarUInteger 16).
pub fn store_coins(b: &mut CellBuilder, nanotons: u128) -> Result<()> {
    Tokens::new(nanotons).store_into(b, Cell::empty_context())?;
    Ok(())
}

/// Loads `coins` (VarUInteger 16).
pub fn load_coins(s: &mut CellSlice<'_>) -> Result<u128> {
    Ok(Tokens::load_from(s)?.into_inner())
}

/// Stores an `addr_std` address.
pub fn store_address(b: &mut CellBuilder, addr: &Address) -> Result<()> {
    addr.to_std().store_into(b, Cell::empty_context())?;
    Ok(())
}

/// Loads an `addr_std` address (anything else is an error).
pub fn load_address(s: &mut CellSlice<'_>) -> Result<Address> {
    Ok(Address::from_std(&StdAddr::load_from(s)?))
}

/// Stores a 256-bit value.
pub fn store_u256(b: &mut CellBuilder, bytes: &[u8; 32]) -> Result<()> {
    b.store_u256(&HashBytes(*bytes))?;
    Ok(())
}

/// Loads a 256-bit value.
pub fn load_u256(s: &mut CellSlice<'_>) -> Result<[u8; 32]> {
    Ok(s.load_u256()?.0)
}

/// A snake string: bytes in the cell's data, continued in its first reference.
pub fn snake_string(bytes: &[u8]) -> Result<Cell> {
    // 127 bytes per cell; build from the tail so each cell references the next.
    let chunks: Vec<&[u8]> = bytes.chunks(127).collect();
    let mut next: Option<Cell> = None;
    for chunk in chunks.iter().rev() {
        let mut b = CellBuilder::new();
        b.store_raw(chunk, (chunk.len() * 8) as u16)?;
        if let Some(n) = next.take() {
            b.store_reference(n)?;
        }
        next = Some(b.build()?);
    }
    match next {
        Some(c) => Ok(c),
        None => Ok(CellBuilder::new().build()?),
    }
}

/// Reads a snake string (at most 64 KiB, so a hostile cell chain cannot make us allocate much).
pub fn read_snake_string(cell: &Cell) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = cell.clone();
    loop {
        let s = cur.as_slice()?;
        if s.size_bits() % 8 != 0 {
            return Err(ChainError::layout(
                "string",
                "bit length not a multiple of 8",
            ));
        }
        let mut buf = vec![0u8; (s.size_bits() / 8) as usize];
        s.get_raw(0, &mut buf, s.size_bits())?;
        out.extend_from_slice(&buf);
        if out.len() > 65536 {
            return Err(ChainError::layout("string", "longer than 64 KiB"));
        }
        if s.size_refs() == 0 {
            return Ok(out);
        }
        cur = s.get_reference_cloned(0)?;
    }
}

/// Serializes a cell tree as a BOC.
pub fn to_boc(cell: &Cell) -> Vec<u8> {
    tycho_types::boc::Boc::encode(cell)
}

/// Parses a BOC with one root.
pub fn from_boc(bytes: &[u8]) -> Result<Cell> {
    tycho_types::boc::Boc::decode(bytes).map_err(|e| ChainError::Boc(e.to_string()))
}

/// Parses a base64 BOC with one root.
pub fn from_boc_base64(text: &str) -> Result<Cell> {
    tycho_types::boc::Boc::decode_base64(text.trim()).map_err(|e| ChainError::Boc(e.to_string()))
}

/// Serializes a cell as a base64 BOC.
pub fn to_boc_base64(cell: &Cell) -> String {
    tycho_types::boc::Boc::encode_base64(cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_strings_round_trip_across_cells() {
        for len in [0usize, 1, 126, 127, 128, 300] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let cell = snake_string(&data).unwrap();
            assert_eq!(read_snake_string(&cell).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn coins_round_trip_at_the_boundaries() {
        for v in [0u128, 1, 1_000_000_000, (1u128 << 120) - 1] {
            let mut b = CellBuilder::new();
            store_coins(&mut b, v).unwrap();
            let cell = b.build().unwrap();
            assert_eq!(load_coins(&mut cell.as_slice().unwrap()).unwrap(), v);
        }
        let mut b = CellBuilder::new();
        assert!(
            store_coins(&mut b, 1u128 << 120).is_err(),
            "coins above 2^120 - 1 must not encode"
        );
    }

    #[test]
    fn garbage_is_not_a_boc() {
        assert!(matches!(from_boc(b"not a boc"), Err(ChainError::Boc(_))));
    }
}
