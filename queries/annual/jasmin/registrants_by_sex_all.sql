-- Registrants by sex, all disease groups. / 男女別登録者数（全疾患群）
SELECT p.sex, COUNT(DISTINCT r.pid) AS n
FROM jasmin_registrant AS r
JOIN patient AS p ON p.pid = r.pid
WHERE r.fiscal_year <= {fy}
GROUP BY p.sex
