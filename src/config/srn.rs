//! `[srn]`: the names in SRNs (owner: `snapshot`, which builds method SRNs,
//! and the data plane's principal SRNs).

settings! {
    /// Samsung Cloud Platform resource names
    /// (`srn:{offering}::{account}:{region}::...`).
    pub struct SrnConfig ["srn"] {
        /// Region in method SRNs.
        region: String = "kr-west1".into(), flat "region";
        /// Offering in method and principal SRNs.
        offering: String = "scp".into(), flat "srn_offering";
    }
}
