//! The cxx bridge to RDKit (see `rdkit_shim.cc`): atoms and bonds with RDKit's enum values.

#[cxx::bridge(namespace = "biomedgpt")]
pub(crate) mod ffi {
    struct RawAtom {
        atomic_num: i32,
        /// `RDKit::Atom::ChiralType`
        chiral_tag: i32,
    }
    struct RawBond {
        begin: u32,
        end: u32,
        /// `RDKit::Bond::BondType`
        bond_type: i32,
        /// `RDKit::Bond::BondDir`
        bond_dir: i32,
    }
    struct RawMol {
        atoms: Vec<RawAtom>,
        bonds: Vec<RawBond>,
    }
    struct RawShape {
        /// Dummy atoms (`*`) with two or more neighbours.
        ring_dummies: u32,
        /// Rings in the largest fused system of rings without an sp3 carbon.
        fused_rings: u32,
    }
    unsafe extern "C++" {
        include!("biomedgpt-chem/src/rdkit_shim.h");
        fn parse_smiles(smiles: &str) -> Result<RawMol>;
        fn measure_smiles(smiles: &str) -> Result<RawShape>;
        fn morgan_fingerprint(smiles: &str, radius: u32, bits: u32) -> Result<Vec<u32>>;
    }
}
