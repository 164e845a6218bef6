//! The few libvirt calls `virt` 0.5 lacks or gets wrong, made directly through
//! `virt::sys`: each checks libvirt's return value and turns a failure into libvirt's
//! last error.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;

use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

use crate::error::{Error, Result};

/// `virDomainGetState`: the state number (reason ignored). `virt`'s `state()` returns
/// `Ok` even when libvirt fails.
pub fn state(dom: &Domain) -> Result<i32> {
    let mut state: c_int = -1;
    let mut reason: c_int = -1;
    // SAFETY: a valid domain handle and two out-pointers to locals.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(VirtError::last_error().into());
    }
    Ok(state)
}

/// `virDomainGetCPUStats(dom, NULL, 0, 0, 0, 0)`: how many host CPUs can be queried.
pub fn cpu_count(dom: &Domain) -> Result<u32> {
    // SAFETY: the documented "count the CPUs" form: null params, zero sizes.
    let rc = unsafe { sys::virDomainGetCPUStats(dom.as_ptr(), std::ptr::null_mut(), 0, 0, 0, 0) };
    if rc < 0 {
        return Err(VirtError::last_error().into());
    }
    Ok(rc as u32)
}

/// A typed parameter's numeric value, whatever integer or float type libvirt used.
fn number(param: &sys::virTypedParameter) -> Option<i64> {
    // SAFETY: the union member read is the one `type_` names.
    unsafe {
        match param.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => Some(i64::from(param.value.i)),
            sys::VIR_TYPED_PARAM_UINT => Some(i64::from(param.value.ui)),
            sys::VIR_TYPED_PARAM_LLONG => Some(param.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => Some(i64::try_from(param.value.ul).unwrap_or(i64::MAX)),
            sys::VIR_TYPED_PARAM_DOUBLE => Some(param.value.d as i64),
            _ => None,
        }
    }
}

/// `virDomainBlockStatsFlags` for `disk`: every numeric parameter by name. Values are
/// returned as `i64` (libvirt's own type for these counters).
pub fn block_stats_flags(dom: &Domain, disk: &str) -> Result<Vec<(String, i64)>> {
    let disk = CString::new(disk).map_err(|_| Error::invalid("disk name contains NUL"))?;
    let mut count: c_int = 0;
    // SAFETY: the "how many parameters" form: null params, count out-pointer.
    let rc = unsafe {
        sys::virDomainBlockStatsFlags(
            dom.as_ptr(),
            disk.as_ptr(),
            std::ptr::null_mut(),
            &mut count,
            0,
        )
    };
    if rc < 0 {
        return Err(VirtError::last_error().into());
    }
    if count <= 0 {
        return Ok(Vec::new());
    }
    // SAFETY: virTypedParameter is plain data; all-zero is a valid (empty) value.
    let mut params: Vec<sys::virTypedParameter> =
        vec![unsafe { std::mem::zeroed() }; count as usize];
    // SAFETY: `params` holds `count` entries, as we tell libvirt.
    let rc = unsafe {
        sys::virDomainBlockStatsFlags(
            dom.as_ptr(),
            disk.as_ptr(),
            params.as_mut_ptr(),
            &mut count,
            0,
        )
    };
    if rc < 0 {
        return Err(VirtError::last_error().into());
    }
    let filled = (count.max(0) as usize).min(params.len());
    let out = params[..filled]
        .iter()
        .filter_map(|p| {
            // SAFETY: libvirt NUL-terminates the field name inside its fixed buffer.
            let name = unsafe { CStr::from_ptr(p.field.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            number(p).map(|v| (name, v))
        })
        .collect();
    // SAFETY: frees strings libvirt may have put in the parameters (none expected).
    unsafe { sys::virTypedParamsClear(params.as_mut_ptr(), filled as c_int) };
    Ok(out)
}
