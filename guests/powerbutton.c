/* powerbutton: arms the ACPI fixed power button (PWRBTN_EN in the PM1a enable register the
 * FADT names), waits for the host to press it, acknowledges it (write 1 to PWRBTN_STS) and
 * powers off: what an OS does on a graceful shutdown request. Polls, so no SCI handler needed. */
#include "runtime/rt.h"

#define PWRBTN (1u << 8)

int main(void)
{
    const u8 *fadt = acpi_table("FACP");
    if (!fadt) {
        printf("powerbutton: no FADT\n");
        return 2;
    }
    u16 evt = (u16)*(const u32 *)(fadt + 56);     /* PM1a_EVT_BLK: status, then enable */
    u8 len = fadt[88];                             /* PM1_EVT_LEN */
    u16 enable = (u16)(evt + len / 2);
    outw(enable, (u16)(inw(enable) | PWRBTN));
    printf("powerbutton: armed, waiting\n");
    while (!(inw(evt) & PWRBTN))
        cpu_relax();
    outw(evt, PWRBTN);
    printf("powerbutton: pressed, status now 0x%x; powering off\n", inw(evt));
    return 0;
}
