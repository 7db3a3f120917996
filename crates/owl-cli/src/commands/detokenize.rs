//! `owl detokenize MODEL ID... [--skip-special]`: the text of token ids. IDs may also be
//! given comma-separated or as a JSON array (`[1, 2, 3]`), as `owl tokenize --json` prints.

use anyhow::bail;

use crate::args::DetokenizeArgs;
use crate::commands::tokenize::load_tokenizer;
use crate::printer;

/// Every id in the arguments, in order.
fn parse_ids(args: &[String]) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for arg in args {
        for part in arg.split([',', ' ', '\t', '\n', '[', ']']).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(id) => ids.push(id),
                Err(_) => bail!("`{part}` is not a token id (a whole number from 0 to {})", u32::MAX),
            }
        }
    }
    Ok(ids)
}

pub fn run(args: &DetokenizeArgs) -> anyhow::Result<()> {
    let ids = parse_ids(&args.ids)?;
    let tokenizer = load_tokenizer(&args.model)?;
    let text = tokenizer.decode(&ids, args.skip_special)?;
    printer::lines([text])?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_ids;

    #[test]
    fn id_lists() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_ids(&args(&["1", "2,3", "[4, 5]"])).unwrap(), [1, 2, 3, 4, 5]);
        assert!(parse_ids(&args(&["-1"])).is_err());
        assert!(parse_ids(&args(&["x"])).unwrap_err().to_string().contains("`x`"));
    }
}
