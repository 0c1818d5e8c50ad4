//! Names of cloud places (an AWS region `us-east-1`, a GCP zone `europe-west1-b`) given by the
//! user (`ls --region`) or the environment (`GANTRY_AWS_REGIONS`): split from comma-separated
//! lists and checked before anything is sent anywhere.

/// Comma-separated lists (`--region a,b --region c`, `GANTRY_AWS_REGIONS=a,b`) → names, trimmed,
/// without empty ones.
pub fn split_names<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `s` can be a place name (`us-east-1`, `eu-central-2`, `us-gov-west-1`,
/// `europe-west1-b`): lowercase letters and digits in dash-separated parts, at most 64
/// characters. Anything else is never sent anywhere.
pub fn is_place_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_lists_split_on_commas() {
        assert_eq!(
            split_names(["us-east-1, eu-west-1", "", " ap-south-1 ,,", "us-east-1"]),
            ["us-east-1", "eu-west-1", "ap-south-1", "us-east-1"]
        );
        assert!(split_names([" , "]).is_empty());
    }

    #[test]
    fn place_name_check() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "europe-west1-b",
        ] {
            assert!(is_place_name(ok), "{ok}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us_east_1",
            "us-east-1/../x",
            "-us",
            "us-",
            "us--1",
            "us east",
            "a.b",
        ] {
            assert!(!is_place_name(bad), "{bad:?}");
        }
        assert!(!is_place_name(&"a".repeat(65)));
    }
}
