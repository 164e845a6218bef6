//! Property tests of the one id rule (`mistify_types::id::check`): what it accepts is
//! one safe path component; what holds a forbidden piece is refused.

use mistify_types::id::check as check_id;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_accepted_id_is_one_safe_path_component(id in any::<String>()) {
        if check_id("id", &id).is_ok() {
            prop_assert!(!id.is_empty() && id.len() <= 256);
            let mut parts = std::path::Path::new(&id).components();
            prop_assert!(matches!(parts.next(), Some(std::path::Component::Normal(_))), "{id:?}");
            prop_assert!(parts.next().is_none(), "{id:?}");
            prop_assert!(!id.contains('@') && !id.contains(';'), "{id:?}");
            prop_assert!(!id.chars().any(|c| c.is_whitespace() || c.is_control()), "{id:?}");
        }
    }

    #[test]
    fn ids_with_a_forbidden_piece_are_refused(
        prefix in "[a-z0-9-]{0,8}",
        bad in prop_oneof![Just("/"), Just(".."), Just("@"), Just(";"), Just(" "), Just("\t"), Just("\u{0}"), Just("\\"), Just("?"), Just("#")],
        suffix in "[a-z0-9-]{0,8}",
    ) {
        let id = format!("{prefix}{bad}{suffix}");
        prop_assert!(check_id("id", &id).is_err(), "{id:?}");
    }

}
